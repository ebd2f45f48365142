// dinamo-sim: a synthetic readout built on the toy model (DESIGN.md section 7). It writes a
// dataset as a replay input (--csv), or publishes histograms on the ZeroMQ bus as a readout
// would (--publish / --connect).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dinamo/v1/histogram.pb.h"
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "dinamo/run_table.h"
#include "dinamo/toy_model.h"
#include <unistd.h>

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

using Clock = std::chrono::steady_clock;
using Sampling = dinamo::ToyModelConfig::Sampling;

volatile std::sig_atomic_t g_stop = 0;

void OnSignal(int) { g_stop = 1; }

struct Options {
  // CSV mode
  std::string csv;
  std::string truth;
  // Bus mode
  std::string publish;
  std::string connect;
  std::size_t histograms = 10;
  double rate = 0.0;
  int snapshots = 0;
  std::string labels = "on";
  std::uint64_t start_run = 1;
  double wait_s = 1.0;
  bool pregenerate = false;
  std::size_t pool = 0;  // runs drawn ahead per histogram and published in a cycle
  std::string source;
  std::uint64_t send_hwm = 0;  // 0: queue without limit
  // Both
  std::size_t runs = 5000;
  std::uint64_t seed = 0;
  std::vector<std::size_t> bins;
  std::vector<double> range = {-5.0, 5.0};  // histogram axis; the Gaussian is in its units
  std::string sampling;
};

Sampling SamplingOf(const std::string& name, Sampling fallback) {
  if (name.empty()) {
    return fallback;
  }
  return name == "events" ? Sampling::kEvents : Sampling::kMultinomial;
}

// The paper's 1 to 19 dead bins are for 100 bins; other binnings lose the same share.
int DeadBinsFor(std::size_t bins) { return std::max(1, static_cast<int>(19 * bins / 100)); }

// OUT.csv -> OUT_truth.csv, beside it.
std::string TruthPathFor(const std::string& csv) {
  const std::string stem = csv.ends_with(".csv") ? csv.substr(0, csv.size() - 4) : csv;
  return stem + "_truth.csv";
}

int WriteCsv(const Options& o) {
  if (o.bins.size() > 1) {
    throw CLI::ValidationError("--bins", "CSV mode writes one histogram: give one bin count");
  }
  dinamo::ToyModelConfig config;
  config.bins = o.bins.empty() ? 100 : o.bins.front();
  config.low = o.range[0];
  config.high = o.range[1];
  config.max_dead_bins = DeadBinsFor(config.bins);
  config.sampling = SamplingOf(o.sampling, Sampling::kEvents);
  const dinamo::ToyDataset data = dinamo::GenerateToyDataset(o.seed, o.runs, config);

  const std::string truth_path = o.truth.empty() ? TruthPathFor(o.csv) : o.truth;
  std::ofstream out(o.csv);
  dinamo::WriteRunTable(data.table, out);
  out.close();
  if (!out) {
    throw std::runtime_error(o.csv + ": write failed");
  }
  std::ofstream truth(truth_path);
  dinamo::WriteToyTruth(data, truth);
  truth.close();
  if (!truth) {
    throw std::runtime_error(truth_path + ": write failed");
  }
  spdlog::info("wrote runs={} bins={} seed={} out={} truth={}", o.runs, config.bins, o.seed, o.csv,
               truth_path);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Bus mode

struct Subdetector {
  const char* name;
  std::vector<const char*> quantities;
};

const std::vector<Subdetector>& Subdetectors() {
  static const std::vector<Subdetector> kAll = {
      {"VELO", {"ClusterSize", "HitsPerModule", "ResidualX", "ResidualY"}},
      {"RICH", {"PhotonYield", "CherenkovAngle", "RingRadius"}},
      {"ECAL", {"ClusterEnergy", "Occupancy", "TimeAlignment"}},
      {"HCAL", {"ClusterEnergy", "Occupancy"}},
      {"MUON", {"HitMultiplicity", "TrackChi2", "Efficiency"}},
      {"UT", {"ClusterCharge", "Occupancy"}},
      {"SCIFI", {"ClusterSize", "HitEfficiency"}},
  };
  return kAll;
}

// Names go round the subdetectors so that a few histograms already span several of them; once
// every SUBDET/Quantity is used, later rounds add a suffix (_1, _2, ...).
std::vector<std::string> HistogramNames(std::size_t count) {
  std::vector<std::string> base;
  const auto& all = Subdetectors();
  for (std::size_t q = 0; base.size() < 19; ++q) {
    for (const auto& d : all) {
      if (q < d.quantities.size()) {
        base.push_back(std::string(d.name) + "/" + d.quantities[q]);
      }
    }
  }
  std::vector<std::string> names;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t round = i / base.size();
    names.push_back(base[i % base.size()] + (round == 0 ? "" : "_" + std::to_string(round)));
  }
  return names;
}

// One histogram's stream: its own toy model and, for the intermediate snapshots, a generator
// of its own, so that the runs do not depend on how many snapshots are asked for.
struct Stream {
  std::string name;
  dinamo::ToyModel model;
  std::mt19937_64 thinning;
  dinamo::RunRecord record;
  std::vector<std::vector<double>> snapshots;  // this run's non-final snapshots, in order
  std::vector<dinamo::RunRecord> pregenerated;
};

std::vector<Stream> MakeStreams(const Options& o) {
  const std::vector<std::size_t> bins = o.bins.empty() ? std::vector<std::size_t>{100, 50} : o.bins;
  const auto names = HistogramNames(o.histograms);
  std::vector<Stream> streams;
  streams.reserve(o.histograms);
  for (std::size_t i = 0; i < o.histograms; ++i) {
    dinamo::ToyModelConfig config;
    config.bins = bins[i % bins.size()];
    config.low = o.range[0];
    config.high = o.range[1];
    config.max_dead_bins = DeadBinsFor(config.bins);
    config.sampling = SamplingOf(o.sampling, Sampling::kMultinomial);
    // Histogram i draws what `dinamo-sim --csv --seed S+i` with the same bins and sampling
    // writes, so a bus test can compare with an offline replay.
    const std::uint64_t seed = o.seed + i;
    streams.push_back(Stream{names[i],
                             dinamo::ToyModel(seed, config),
                             std::mt19937_64(seed ^ 0x5eed5eed5eed5eedULL),
                             {},
                             {},
                             {}});
  }
  return streams;
}

// Snapshot k of K holds a random k/(K+1) of the run's entries, each snapshot inside the next,
// as if the entries had arrived in random order: thinning the final counts backwards.
void MakeSnapshots(Stream& s, int count) {
  s.snapshots.resize(static_cast<std::size_t>(count));
  const std::vector<double>* later = &s.record.counts;
  for (int k = count; k >= 1; --k) {
    auto& snap = s.snapshots[static_cast<std::size_t>(k - 1)];
    snap.resize(later->size());
    const double keep = static_cast<double>(k) / static_cast<double>(k + 1);
    for (std::size_t b = 0; b < snap.size(); ++b) {
      const auto n = static_cast<std::int64_t>((*later)[b]);
      snap[b] = static_cast<double>(std::binomial_distribution<std::int64_t>(n, keep)(s.thinning));
    }
    later = &snap;
  }
}

std::int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string DefaultSource() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) {
    host[0] = '\0';
  }
  return "dinamo-sim@" + std::string(host) + ":" + std::to_string(getpid());
}

class Publisher {
 public:
  explicit Publisher(const Options& o) : socket_(context_, zmq::socket_type::pub), options_(o) {
    // Nothing may be dropped on the way out: no high-water mark by default, or one at which
    // send waits (XPUB_NODROP) instead of dropping, so that a slower subscriber throttles the
    // publisher rather than its memory growing; a bounded linger lets the last messages leave.
    socket_.set(zmq::sockopt::sndhwm, static_cast<int>(o.send_hwm));
    if (o.send_hwm > 0) {
      socket_.set(zmq::sockopt::xpub_nodrop, true);
    }
    socket_.set(zmq::sockopt::linger, 10000);
    if (!o.publish.empty()) {
      socket_.bind(o.publish);
      spdlog::info("bound endpoint={}", o.publish);
    } else {
      socket_.connect(o.connect);
      spdlog::info("connecting endpoint={}", o.connect);
    }
    message_.set_source(o.source.empty() ? DefaultSource() : o.source);
  }

  void Send(const Stream& s, std::uint64_t run, const std::vector<double>& counts, bool final,
            dinamo::Label label) {
    Pace();
    message_.set_name(s.name);
    message_.set_run(run);
    message_.set_final(final);
    message_.set_label(LabelOf(final ? label : dinamo::Label::kUnknown));
    message_.mutable_counts()->Assign(counts.begin(), counts.end());
    message_.clear_axes();
    const auto& config = s.model.config();
    auto* axis = message_.add_axes();
    axis->set_bins(static_cast<std::uint32_t>(config.bins));
    axis->set_low(config.low);
    axis->set_high(config.high);
    message_.set_sequence(++sent_);
    message_.set_time_unix_ns(NowUnixNs());
    message_.SerializeToString(&body_);

    socket_.send(zmq::buffer(s.name), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(body_), zmq::send_flags::none);
    bytes_ += body_.size();
  }

  void Start() { start_ = Clock::now(); }
  std::uint64_t sent() const { return sent_; }
  std::uint64_t bytes() const { return bytes_; }
  double Elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  dinamo::v1::Label LabelOf(dinamo::Label label) const {
    if (options_.labels != "on" || label == dinamo::Label::kUnknown) {
      return dinamo::v1::LABEL_UNSPECIFIED;
    }
    return label == dinamo::Label::kBad ? dinamo::v1::LABEL_BAD : dinamo::v1::LABEL_GOOD;
  }

  // Message i leaves at start + i / rate: a steady rate without drift from sleep overshoot.
  void Pace() {
    if (options_.rate <= 0.0) {
      return;
    }
    const auto due = start_ + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(sent_ / options_.rate));
    std::this_thread::sleep_until(due);
  }

  zmq::context_t context_;
  zmq::socket_t socket_;
  const Options& options_;
  dinamo::v1::Histogram message_;
  std::string body_;
  std::uint64_t sent_ = 0;
  std::uint64_t bytes_ = 0;
  Clock::time_point start_ = Clock::now();
};

void Pregenerate(std::vector<Stream>& streams, std::size_t runs) {
  const auto t0 = Clock::now();
  std::size_t doubles = 0;
  for (auto& s : streams) {
    s.pregenerated.resize(runs);
    dinamo::ToyTruth truth;
    for (auto& r : s.pregenerated) {
      s.model.Next(r, truth);
      doubles += r.counts.size();
    }
  }
  spdlog::info("pregenerated histograms={} runs={} bytes={} seconds={:.2f}", streams.size(), runs,
               doubles * sizeof(double), std::chrono::duration<double>(Clock::now() - t0).count());
}

// Publishes one run of every histogram: the snapshots in order (all histograms' first, then
// all histograms' second, ...), then the finals.
bool PublishRun(const Options& o, std::size_t index, std::vector<Stream>& streams, Publisher& pub) {
  dinamo::ToyTruth truth;
  for (auto& s : streams) {
    if (!s.pregenerated.empty()) {
      s.record = s.pregenerated[index % s.pregenerated.size()];
    } else {
      s.model.Next(s.record, truth);
    }
    MakeSnapshots(s, o.snapshots);
  }
  // With a pool the drawn runs repeat; the published run numbers go on increasing.
  const std::uint64_t run = o.start_run + static_cast<std::uint64_t>(index);
  for (int k = 0; k < o.snapshots; ++k) {
    for (const auto& s : streams) {
      if (g_stop) {
        return false;
      }
      pub.Send(s, run, s.snapshots[static_cast<std::size_t>(k)], false, s.record.label);
    }
  }
  for (const auto& s : streams) {
    if (g_stop) {
      return false;
    }
    pub.Send(s, run, s.record.counts, true, s.record.label);
  }
  return true;
}

int PublishBus(const Options& o) {
  auto streams = MakeStreams(o);
  const std::size_t pool = o.pregenerate ? o.runs : o.pool;
  if (pool > 0) {
    Pregenerate(streams, pool);
  }
  Publisher pub(o);
  spdlog::info(
      "publishing histograms={} runs={} snapshots={} rate={} labels={} seed={} "
      "start_run={}",
      o.histograms, o.runs, o.snapshots, o.rate, o.labels, o.seed, o.start_run);
  // A PUB socket drops what it sends before a subscriber has joined.
  std::this_thread::sleep_for(std::chrono::duration<double>(o.wait_s));

  pub.Start();
  std::size_t runs_done = 0;
  try {
    while (runs_done < o.runs && PublishRun(o, runs_done, streams, pub)) {
      ++runs_done;
    }
  } catch (const zmq::error_t& e) {
    // A signal interrupting a send is the normal way to stop early.
    if (e.num() != EINTR) {
      throw;
    }
  }
  const double elapsed = pub.Elapsed();
  spdlog::info("done messages={} runs={} bytes={} seconds={:.3f} rate_hz={:.0f}{}", pub.sent(),
               runs_done, pub.bytes(), elapsed, elapsed > 0 ? pub.sent() / elapsed : 0.0,
               g_stop ? " stopped_by_signal=1" : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  GOOGLE_PROTOBUF_VERIFY_VERSION;
  Options o;
  CLI::App app{"Synthetic readout: the paper's toy detector as a replay CSV or on the bus"};
  auto* csv = app.add_option("--csv", o.csv, "write the runs as a replay CSV to this file");
  app.add_option("--truth", o.truth, "truth CSV (default: OUT_truth.csv beside --csv)")->needs(csv);
  auto* publish = app.add_option("--publish", o.publish, "bind a PUB socket on this endpoint");
  auto* connect = app.add_option("--connect", o.connect, "connect a PUB socket to this endpoint");
  csv->excludes(publish)->excludes(connect);
  publish->excludes(connect);
  app.add_option("--runs", o.runs, "runs to draw per histogram")->capture_default_str();
  app.add_option("--seed", o.seed, "generator seed; histogram i uses seed + i")
      ->capture_default_str();
  app.add_option("--bins", o.bins,
                 "bin counts, cycled over the histograms (default 100 for --csv, 100 50 on the "
                 "bus); anomalous runs lose up to 19 % of the bins")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24));
  app.add_option("--range", o.range, "histogram axis LOW HIGH (the toy Gaussian is near 0)")
      ->expected(2)
      ->capture_default_str();
  app.add_option("--sampling", o.sampling,
                 "events (draw every value) or multinomial (draw the bin counts; default on the "
                 "bus)")
      ->check(CLI::IsMember({"events", "multinomial"}));
  app.add_option("--histograms", o.histograms, "histograms to publish")
      ->check(CLI::Range(std::size_t{1}, std::size_t{10000000}))
      ->capture_default_str();
  app.add_option("--rate", o.rate, "messages per second, 0 for as fast as possible")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--snapshots", o.snapshots, "non-final cumulative snapshots before each final")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--labels", o.labels, "carry the toy's good/bad label on final histograms")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.add_option("--start-run", o.start_run, "bus run number of the first dataset run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--wait-s", o.wait_s, "seconds to wait for subscribers before publishing")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  auto* pregenerate =
      app.add_flag("--pregenerate", o.pregenerate,
                   "draw every run before publishing, so that drawing never limits the rate");
  app.add_option("--pool", o.pool,
                 "draw this many runs per histogram ahead and publish them over and over (run "
                 "numbers still increase): a high rate for long without the memory of "
                 "--pregenerate")
      ->excludes(pregenerate);
  app.add_option("--source", o.source, "the source field of every message");
  app.add_option("--send-hwm", o.send_hwm,
                 "messages queued for a slow subscriber before sending waits for it (0: queue "
                 "without limit)")
      ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{100000000}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
    if (o.csv.empty() && o.publish.empty() && o.connect.empty()) {
      throw CLI::RequiredError("one of --csv, --publish or --connect");
    }
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  try {
    return o.csv.empty() ? PublishBus(o) : WriteCsv(o);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  } catch (const std::invalid_argument& e) {
    spdlog::error("{}", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return kExitFailure;
  }
}
