// state_bench: what the daemon's templates cost in memory, and how long their snapshot takes to
// write and to restore. It drives dinamod's own Monitor and SnapshotStore (the code the daemon
// runs, no socket in between) so that the figures are those of the daemon's state alone:
//
//   state_bench --histograms N --bins B --runs R --journal-runs J [--snapshot-dir DIR]
//
// N distinct histograms of B bins each get R final runs (toy-model counts, round-robin), then
// the resident set is read from /proc/self/statm: (after - before) / N is the memory per
// template, everything the monitor keeps per name included (map node, name, axes, template,
// journal, alarm record). With --snapshot-dir it then times Monitor::SaveTo plus
// SnapshotStore::Write (as Daemon::WriteSnapshot does, fsync included) and SnapshotStore::Load
// into a fresh Monitor (as Daemon::Restore does, CRC and consistency checks included).
// Prints one JSON line.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "config.h"
#include "dinamo/toy_model.h"
#include "monitor.h"
#include "snapshot_store.h"
#include <malloc.h>
#include <unistd.h>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::size_t histograms = 100000;
  std::size_t bins = 100;
  std::size_t runs = 4;
  std::size_t journal_runs = 0;
  std::string snapshot_dir;
  std::size_t repeats = 1;  // snapshot writes and restores; medians are reported
};

bool ParseOptions(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      return false;
    }
    const char* v = argv[++i];
    if (a == "--histograms") {
      o.histograms = std::strtoul(v, nullptr, 10);
    } else if (a == "--bins") {
      o.bins = std::strtoul(v, nullptr, 10);
    } else if (a == "--runs") {
      o.runs = std::strtoul(v, nullptr, 10);
    } else if (a == "--journal-runs") {
      o.journal_runs = std::strtoul(v, nullptr, 10);
    } else if (a == "--snapshot-dir") {
      o.snapshot_dir = v;
    } else if (a == "--repeats") {
      o.repeats = std::max(1UL, std::strtoul(v, nullptr, 10));
    } else {
      return false;
    }
  }
  return o.histograms > 0 && o.bins > 0 && o.runs > 0;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::size_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0;
  std::size_t resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string ConfigText(const Options& o) {
  return "input:\n  connect: [\"tcp://127.0.0.1:1\"]\n"
         "output:\n  bind: \"tcp://127.0.0.1:2\"\n"
         "control:\n  bind: \"tcp://127.0.0.1:3\"\n"
         "http:\n  bind: \"127.0.0.1:4\"\n"
         "state:\n  directory: \"" +
         (o.snapshot_dir.empty() ? std::string(".") : o.snapshot_dir) +
         "\"\n"
         "log:\n  level: warn\n"
         "defaults:\n  journal_runs: " +
         std::to_string(o.journal_runs) + "\n  warmup_runs: 2\n";
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: state_bench [--histograms N] [--bins B] [--runs R] [--journal-runs J] "
                 "[--snapshot-dir DIR [--repeats K]]\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  using namespace dinamo;
  auto config = std::make_shared<const daemon::Config>(daemon::ParseConfig(ConfigText(o), "bench"));

  // A pool of drawn runs and one message per histogram, prepared before the baseline.
  constexpr std::size_t kPool = 16;
  ToyModelConfig toy;
  toy.bins = o.bins;
  ToyModel model(1, toy);
  std::vector<std::vector<double>> pool;
  RunRecord record;
  ToyTruth truth;
  while (pool.size() < kPool) {
    model.Next(record, truth);
    if (record.label != Label::kBad) {
      pool.push_back(record.counts);
    }
  }
  std::vector<std::string> names;
  names.reserve(o.histograms);
  for (std::size_t i = 0; i < o.histograms; ++i) {
    names.push_back("BENCH/H" + std::to_string(i));
  }
  v1::Histogram h;
  h.set_final(true);
  auto* axis = h.add_axes();
  axis->set_bins(static_cast<std::uint32_t>(o.bins));
  axis->set_low(-5.0);
  axis->set_high(5.0);
  h.mutable_counts()->Reserve(static_cast<int>(o.bins));

  daemon::SettingsResolver settings(config);
  malloc_trim(0);
  const std::size_t before = ResidentBytes();
  auto monitor = std::make_unique<daemon::Monitor>(settings);
  std::uint64_t verdicts = 0;
  const auto feed_start = Clock::now();
  for (std::size_t run = 1; run <= o.runs; ++run) {
    for (std::size_t i = 0; i < o.histograms; ++i) {
      const auto& counts = pool[(run + i) % kPool];
      h.set_name(names[i]);
      h.set_run(run);
      h.mutable_counts()->Assign(counts.begin(), counts.end());
      verdicts += monitor->OnHistogram(names[i], h, 0).verdict.has_value() ? 1 : 0;
    }
  }
  const double feed_ms = Ms(Clock::now() - feed_start);
  malloc_trim(0);
  const std::size_t after = ResidentBytes();
  const double per_template = (static_cast<double>(after) - static_cast<double>(before)) /
                              static_cast<double>(o.histograms);
  std::printf(
      "{\"histograms\": %zu, \"bins\": %zu, \"runs\": %zu, \"journal_runs\": %zu, "
      "\"verdicts\": %llu, \"templates\": %zu, \"feed_ms\": %.1f, \"rss_before\": %zu, "
      "\"rss_after\": %zu, \"bytes_per_template\": %.1f",
      o.histograms, o.bins, o.runs, o.journal_runs, static_cast<unsigned long long>(verdicts),
      monitor->templates(), feed_ms, before, after, per_template);

  // Write and restore K times (the disk and the page cache of a shared machine vary a lot from
  // one try to the next): the medians are reported, and every try is checked.
  if (!o.snapshot_dir.empty()) {
    std::filesystem::create_directories(o.snapshot_dir);
    daemon::SnapshotStore store(o.snapshot_dir);
    std::vector<double> write_ms;
    std::vector<double> restore_ms;
    for (std::size_t k = 0; k < o.repeats; ++k) {
      const auto write_start = Clock::now();
      v1::Snapshot snapshot;
      snapshot.set_format_version(daemon::kSnapshotFormatVersion);
      monitor->SaveTo(snapshot);
      const auto error = store.Write(snapshot);
      write_ms.push_back(Ms(Clock::now() - write_start));
      if (error) {
        std::fprintf(stderr, "snapshot not written: %s\n", error->c_str());
        return 1;
      }

      daemon::Monitor restored(settings);
      daemon::SnapshotStore reader(o.snapshot_dir);
      int problems = 0;
      const auto restore_start = Clock::now();
      auto loaded = reader.Load(
          problems, [&restored](const v1::Snapshot& s) { return restored.RestoreFrom(s); });
      restore_ms.push_back(Ms(Clock::now() - restore_start));
      if (!loaded || restored.templates() != monitor->templates()) {
        std::fprintf(stderr, "snapshot not restored (problems=%d)\n", problems);
        return 1;
      }
    }
    const auto file_bytes = std::filesystem::file_size(store.current_path());
    std::printf(", \"snapshot_bytes\": %ju, \"repeats\": %zu, \"write_ms\": %.1f, "
                "\"restore_ms\": %.1f, \"restore_ms_min\": %.1f, \"restore_ms_max\": %.1f",
                static_cast<std::uintmax_t>(file_bytes), o.repeats, Median(write_ms),
                Median(restore_ms), *std::min_element(restore_ms.begin(), restore_ms.end()),
                *std::max_element(restore_ms.begin(), restore_ms.end()));
  }
  std::printf("}\n");
  return 0;
}
