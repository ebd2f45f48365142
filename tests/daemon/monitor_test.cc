#include "monitor.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "dinamo/run_table.h"

namespace dinamo::daemon {
namespace {

std::vector<double> Bell(double shift = 0.0, double scale = 1000.0) {
  std::vector<double> counts(20);
  for (std::size_t b = 0; b < counts.size(); ++b) {
    const double z = (static_cast<double>(b) - 9.5 - shift) / 3.0;
    counts[b] = std::round(scale * std::exp(-0.5 * z * z)) + 1.0;
  }
  return counts;
}

v1::Histogram Hist(const std::string& name, std::uint64_t run, std::vector<double> counts,
                   v1::Label label = v1::LABEL_UNSPECIFIED, bool final = true) {
  v1::Histogram h;
  h.set_name(name);
  h.set_run(run);
  h.set_final(final);
  h.set_label(label);
  v1::Axis* axis = h.add_axes();
  axis->set_bins(static_cast<std::uint32_t>(counts.size()));
  axis->set_low(-5.0);
  axis->set_high(5.0);
  h.mutable_counts()->Add(counts.begin(), counts.end());
  return h;
}

class MonitorTest : public ::testing::Test {
 protected:
  void Configure(const std::string& defaults) {
    config_ = std::make_shared<const Config>(ParseConfig(
        "input:\n  connect: [\"tcp://127.0.0.1:5550\"]\ndefaults:\n" + defaults, "test.yaml"));
    resolver_.Reset(config_);
    monitor_.ConfigChanged();
  }

  MonitorResult Send(const v1::Histogram& h) { return Frames(h.name(), h.SerializeAsString()); }

  MonitorResult Frames(const std::string& topic, const std::string& body,
                       std::int64_t now_unix_ns = 1) {
    const std::string_view frames[] = {topic, body};
    return monitor_.OnMessage(frames, now_unix_ns);
  }

  MonitorResult SendAt(const v1::Histogram& h, std::int64_t now_unix_ns) {
    return Frames(h.name(), h.SerializeAsString(), now_unix_ns);
  }

  CommandOutcome Relabel(const std::string& name, std::uint64_t run, v1::Label label,
                         bool whole_run = false) {
    v1::SetLabel l;
    l.set_histogram(name);
    l.set_run(run);
    l.set_label(label);
    l.set_whole_run(whole_run);
    return monitor_.SetLabel(l, who_);
  }

  // The template as get_template shows it, without the run bookkeeping.
  std::string TemplateOf(const std::string& name) const {
    const auto view = monitor_.Template(name);
    return std::string(reinterpret_cast<const char*>(view->mu().data()),
                       sizeof(double) * static_cast<std::size_t>(view->mu_size())) +
           std::string(reinterpret_cast<const char*>(view->sigma().data()),
                       sizeof(double) * static_cast<std::size_t>(view->sigma_size())) +
           std::to_string(view->learned_runs());
  }

  v1::AlarmState StateOf(const std::string& name) const {
    const v1::AlarmTable table = monitor_.Alarms("");
    for (const v1::Alarm& a : table.alarms()) {
      if (a.histogram() == name) {
        return a.state();
      }
    }
    return v1::ALARM_STATE_NORMAL;
  }

  Actor who_{"shifter", "console1", "looked at it"};

  std::string State() const {
    v1::Snapshot s;
    monitor_.SaveTo(s);
    return s.SerializeAsString();
  }

  std::uint64_t Learned(const std::string& name) const {
    return monitor_.Template(name)->learned_runs();
  }

  std::shared_ptr<const Config> config_ = std::make_shared<const Config>(
      ParseConfig("input:\n  connect: [\"tcp://127.0.0.1:5550\"]\n"
                  "defaults:\n  warmup_runs: 0\n  auto_accept: always\n",
                  "test.yaml"));
  SettingsResolver resolver_{config_};
  Monitor monitor_{resolver_};
};

TEST_F(MonitorTest, ValidHistogramGivesAVerdictWithTopPulls) {
  const MonitorResult r = Send(Hist("A/h", 1, Bell()));
  ASSERT_FALSE(r.rejection);
  ASSERT_TRUE(r.verdict);
  EXPECT_EQ(r.verdict->histogram(), "A/h");
  EXPECT_EQ(r.verdict->run(), 1u);
  EXPECT_EQ(r.verdict->bins(), 20u);
  EXPECT_EQ(r.verdict->method(), "ewma");
  ASSERT_EQ(r.verdict->pulls_size(), 5);
  const auto view = monitor_.Template("A/h");
  double largest = 0.0;
  for (double p : view->last_pulls()) {
    largest = std::max(largest, std::abs(p));
  }
  // get_template keeps the last pulls in single precision.
  EXPECT_FLOAT_EQ(static_cast<float>(std::abs(r.verdict->pulls(0).pull())),
                  static_cast<float>(largest));
  for (int i = 1; i < 5; ++i) {
    EXPECT_GE(std::abs(r.verdict->pulls(i - 1).pull()), std::abs(r.verdict->pulls(i).pull()));
  }
}

struct BadCase {
  const char* what;
  std::vector<std::string> frames;
  const char* reason;
};

TEST_F(MonitorTest, EveryKindOfBadInputIsRefusedAndChangesNothing) {
  ASSERT_FALSE(Send(Hist("A/h", 5, Bell())).rejection);
  const std::string before = State();

  auto with = [](auto change) {
    v1::Histogram h = Hist("A/h", 9, Bell());
    change(h);
    return h.SerializeAsString();
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<BadCase> cases = {
      {"garbage", {"A/h", "\xff\xfe garbage \x01\x02"}, "malformed"},
      {"one frame", {"A/h"}, "frame_count"},
      {"three frames", {"A/h", with([](auto&) {}), "x"}, "frame_count"},
      {"empty body", {"A/h", ""}, "empty_body"},
      {"axes mismatch",
       {"A/h", with([](auto& h) { h.mutable_axes(0)->set_bins(30); })},
       "shape_mismatch"},
      {"nan", {"A/h", with([&](auto& h) { h.set_counts(3, nan); })}, "nan_count"},
      {"inf", {"A/h", with([&](auto& h) { h.set_counts(3, inf); })}, "infinite_count"},
      {"negative", {"A/h", with([](auto& h) { h.set_counts(3, -1.0); })}, "negative_count"},
      {"no counts",
       {"A/h", with([](auto& h) {
          h.clear_counts();
          h.clear_axes();
        })},
       "no_counts"},
      {"empty name", {"", with([](auto& h) { h.set_name(""); })}, "empty_name"},
      {"topic differs", {"A/other", with([](auto&) {})}, "topic_mismatch"},
      {"run 0", {"A/h", with([](auto& h) { h.set_run(0); })}, "run_unset"},
      {"repeated run", {"A/h", with([](auto& h) { h.set_run(5); })}, "run_repeated"},
      {"older run", {"A/h", with([](auto& h) { h.set_run(4); })}, "run_out_of_order"},
      {"non-final of final run",
       {"A/h", with([](auto& h) {
          h.set_run(5);
          h.set_final(false);
        })},
       "run_already_final"},
      {"oversized", {"A/h", std::string((16u << 20) + 1, 'x')}, "oversized"},
  };
  for (const BadCase& c : cases) {
    std::vector<std::string_view> frames(c.frames.begin(), c.frames.end());
    const MonitorResult r = monitor_.OnMessage(frames, 1);
    ASSERT_TRUE(r.rejection) << c.what;
    EXPECT_EQ(r.rejection->reason, c.reason) << c.what;
    EXPECT_FALSE(r.verdict) << c.what;
    EXPECT_EQ(State(), before) << c.what;
  }
  EXPECT_FALSE(Send(Hist("A/h", 6, Bell())).rejection);
}

TEST_F(MonitorTest, HistogramWithoutAxesIsOneDimensional) {
  v1::Histogram h = Hist("A/h", 1, Bell());
  h.clear_axes();
  const MonitorResult r = Send(h);
  ASSERT_FALSE(r.rejection);
  EXPECT_EQ(r.verdict->bins(), 20u);
}

TEST_F(MonitorTest, TwoDimensionalHistogramNeedsTheProductOfItsAxes) {
  v1::Histogram h = Hist("A/h2", 1, Bell());
  h.mutable_axes(0)->set_bins(4);
  v1::Axis* y = h.add_axes();
  y->set_bins(5);
  y->set_low(0.0);
  y->set_high(1.0);
  EXPECT_FALSE(Send(h).rejection);
  y->set_bins(6);
  h.set_run(2);
  ASSERT_TRUE(Send(h).rejection);
  EXPECT_EQ(Send(h).rejection->reason, "shape_mismatch");
}

TEST_F(MonitorTest, MessageLabelGoodTeachesAndBadDoesNot) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n");
  Send(Hist("A/h", 1, Bell(), v1::LABEL_GOOD));
  EXPECT_EQ(Learned("A/h"), 1u);
  Send(Hist("A/h", 2, Bell(), v1::LABEL_BAD));
  Send(Hist("A/h", 3, Bell()));
  EXPECT_EQ(Learned("A/h"), 1u);
}

TEST_F(MonitorTest, AutoAcceptAlwaysTeachesUnlabelledRuns) {
  Configure("  warmup_runs: 0\n  auto_accept: always\n");
  Send(Hist("A/h", 1, Bell()));
  Send(Hist("A/h", 2, Bell(3.0)));
  EXPECT_EQ(Learned("A/h"), 2u);
  Send(Hist("A/h", 3, Bell(), v1::LABEL_BAD));
  EXPECT_EQ(Learned("A/h"), 2u);
}

TEST_F(MonitorTest, AutoAcceptBelowThresholdTeachesOnlyRunsThatLookNormal) {
  Configure("  warmup_runs: 2\n  auto_accept: below_threshold\n  threshold: 1.0\n");
  Send(Hist("A/h", 1, Bell()));  // warm-up: taught although the uniform start disagrees
  Send(Hist("A/h", 2, Bell()));
  EXPECT_EQ(Learned("A/h"), 2u);
  const MonitorResult odd = Send(Hist("A/h", 3, Bell(6.0)));
  EXPECT_TRUE(odd.verdict->anomalous());
  EXPECT_FALSE(odd.verdict->learned());
  EXPECT_EQ(Learned("A/h"), 2u);
  const MonitorResult normal = Send(Hist("A/h", 4, Bell()));
  EXPECT_FALSE(normal.verdict->anomalous());
  EXPECT_TRUE(normal.verdict->learned());
}

TEST_F(MonitorTest, WarmUpMarksVerdictsAndSuppressesAlarms) {
  Configure("  warmup_runs: 3\n  auto_accept: never\n");
  const MonitorResult r = Send(Hist("A/h", 1, Bell(5.0)));
  EXPECT_TRUE(r.verdict->warmup());
  EXPECT_TRUE(r.verdict->anomalous());
  EXPECT_EQ(r.verdict->severity(), v1::SEVERITY_UNDEFINED);
  EXPECT_FALSE(r.alarm);
  EXPECT_EQ(monitor_.alarms_active(), 0u);
}

TEST_F(MonitorTest, NonFinalMessagesAreScoredButNeverTeach) {
  Configure("  warmup_runs: 0\n  auto_accept: always\n");
  const MonitorResult r = Send(Hist("A/h", 1, Bell(), v1::LABEL_GOOD, false));
  ASSERT_TRUE(r.verdict);
  EXPECT_FALSE(r.verdict->final());
  EXPECT_FALSE(r.verdict->learned());
  EXPECT_EQ(Learned("A/h"), 0u);
  EXPECT_FALSE(Send(Hist("A/h", 1, Bell(), v1::LABEL_GOOD, true)).rejection);
  EXPECT_EQ(Learned("A/h"), 1u);
}

TEST_F(MonitorTest, BelowMinEntriesIsUndefinedAndDoesNotTeach) {
  Configure("  warmup_runs: 0\n  auto_accept: always\n  min_entries: 1000000\n");
  const MonitorResult r = Send(Hist("A/h", 1, Bell(5.0)));
  EXPECT_EQ(r.verdict->severity(), v1::SEVERITY_UNDEFINED);
  EXPECT_FALSE(r.alarm);
  EXPECT_EQ(Learned("A/h"), 0u);
}

TEST_F(MonitorTest, EmptyHistogramIsScoredButDoesNotTeach) {
  const MonitorResult r = Send(Hist("A/h", 1, std::vector<double>(20, 0.0)));
  ASSERT_TRUE(r.verdict);
  EXPECT_EQ(r.verdict->severity(), v1::SEVERITY_UNDEFINED);
  EXPECT_EQ(Learned("A/h"), 0u);
}

// Counts the lines of a log that contain `needle`.
std::size_t LinesWith(const std::string& log, const std::string& needle) {
  std::istringstream in(log);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    n += line.find(needle) != std::string::npos;
  }
  return n;
}

TEST_F(MonitorTest, AnAlarmStormIsLoggedAtMostAHundredLinesASecondAndCounted) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n  threshold: 1.0\n");
  std::ostringstream log;
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_st>(log)));

  constexpr std::int64_t kSecond = 1'000'000'000;
  constexpr std::int64_t kNow = 1'700'000'000 * kSecond;
  constexpr int kHistograms = 250;
  int changes = 0;
  int raised = 0;
  for (int i = 0; i < kHistograms; ++i) {
    const std::string name = "Storm/h" + std::to_string(i);
    for (std::uint64_t run = 1; run <= 5; ++run) {
      changes += SendAt(Hist(name, run, Bell(), v1::LABEL_GOOD), kNow).alarm.has_value();
    }
    const MonitorResult r = SendAt(Hist(name, 6, Bell(6.0)), kNow + 1);
    changes += r.alarm.has_value();
    raised += r.alarm && r.alarm->event() == v1::ALARM_EVENT_RAISED;
  }
  const std::size_t lines_in_the_second = LinesWith(log.str(), "] alarm ");
  monitor_.FlushAlarmLog(kNow + kSecond);
  const std::string after = log.str();
  spdlog::set_default_logger(previous);

  EXPECT_EQ(raised, kHistograms);  // every change is still published
  ASSERT_GT(changes, static_cast<int>(kAlarmLinesPerSecond));
  EXPECT_EQ(lines_in_the_second, kAlarmLinesPerSecond);
  const std::string count =
      "alarm changes not logged=" + std::to_string(changes - kAlarmLinesPerSecond) + " ";
  EXPECT_EQ(LinesWith(after, count), 1u) << after.substr(after.size() - 300);
}

TEST_F(MonitorTest, AlarmIsRaisedOnceAndLatchedWhenNormalAgainUnacknowledged) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n  threshold: 1.0\n");
  for (std::uint64_t run = 1; run <= 5; ++run) {
    Send(Hist("A/h", run, Bell(), v1::LABEL_GOOD));
  }
  const MonitorResult raised = Send(Hist("A/h", 6, Bell(6.0)));
  ASSERT_TRUE(raised.alarm);
  EXPECT_EQ(raised.alarm->event(), v1::ALARM_EVENT_RAISED);
  EXPECT_EQ(raised.alarm->state(), v1::ALARM_STATE_UNACKNOWLEDGED);
  EXPECT_EQ(raised.alarm->severity(), v1::SEVERITY_MAJOR);
  EXPECT_FALSE(Send(Hist("A/h", 7, Bell(6.0))).alarm);  // still anomalous: no new message
  EXPECT_EQ(monitor_.alarms_active(), 1u);
  const MonitorResult cleared = Send(Hist("A/h", 8, Bell()));
  ASSERT_TRUE(cleared.alarm);
  EXPECT_EQ(cleared.alarm->event(), v1::ALARM_EVENT_CLEARED);
  // Nobody acknowledged it: it stays latched until someone does.
  EXPECT_EQ(cleared.alarm->state(), v1::ALARM_STATE_RETURNED_UNACKNOWLEDGED);
  EXPECT_EQ(monitor_.alarms_active(), 0u);
}

TEST_F(MonitorTest, ChangeOfBinningResetsTheTemplateAndAnnouncesIt) {
  Send(Hist("A/h", 1, Bell()));
  Send(Hist("A/h", 2, Bell()));
  EXPECT_EQ(Learned("A/h"), 2u);
  std::vector<double> finer(40, 10.0);
  const MonitorResult r = Send(Hist("A/h", 3, finer));
  ASSERT_TRUE(r.reset_alarm);
  EXPECT_EQ(r.reset_alarm->event(), v1::ALARM_EVENT_REBASELINED);
  EXPECT_EQ(r.verdict->bins(), 40u);
  EXPECT_EQ(Learned("A/h"), 1u);  // the reset template learned run 3 only
  EXPECT_FALSE(Send(Hist("A/h", 4, finer)).reset_alarm);
}

TEST_F(MonitorTest, ReloadedThresholdAppliesToTheNextMessageAndKeepsTheTemplate) {
  Send(Hist("A/h", 1, Bell()));
  Configure("  warmup_runs: 0\n  auto_accept: always\n  threshold: 2.5\n");
  const MonitorResult r = Send(Hist("A/h", 2, Bell()));
  EXPECT_EQ(r.verdict->threshold(), 2.5);
  EXPECT_EQ(Learned("A/h"), 2u);
}

TEST_F(MonitorTest, SnapshotWithLastPullsInDoublePrecisionStillRestores) {
  for (std::uint64_t run = 1; run <= 3; ++run) {
    Send(Hist("A/h", run, Bell(0.1 * static_cast<double>(run))));
  }
  v1::Snapshot snapshot;
  monitor_.SaveTo(snapshot);
  ASSERT_EQ(snapshot.histograms_size(), 1);
  v1::HistogramState& hs = *snapshot.mutable_histograms(0);
  ASSERT_EQ(hs.last_pulls_single_size(), 20);
  for (float p : hs.last_pulls_single()) {
    hs.add_last_pulls(p);  // as snapshots before last_pulls_single kept them
  }
  hs.clear_last_pulls_single();

  Monitor restored(resolver_);
  ASSERT_FALSE(restored.RestoreFrom(snapshot));
  const auto before = monitor_.Template("A/h");
  const auto after = restored.Template("A/h");
  ASSERT_EQ(after->last_pulls_size(), 20);
  for (int b = 0; b < 20; ++b) {
    EXPECT_EQ(after->last_pulls(b), before->last_pulls(b)) << b;
  }
}

TEST_F(MonitorTest, SnapshotRoundTripContinuesExactly) {
  for (std::uint64_t run = 1; run <= 30; ++run) {
    Send(Hist("A/h", run, Bell(0.1 * static_cast<double>(run % 5))));
    Send(Hist("B/h", run, Bell(0.2 * static_cast<double>(run % 3))));
  }
  Send(Hist("A/h", 31, Bell(6.0)));  // leaves an active alarm in the state
  v1::Snapshot snapshot;
  monitor_.SaveTo(snapshot);
  v1::Snapshot parsed;
  ASSERT_TRUE(parsed.ParseFromString(snapshot.SerializeAsString()));

  Monitor restored(resolver_);
  ASSERT_FALSE(restored.RestoreFrom(parsed));
  v1::Snapshot again;
  restored.SaveTo(again);
  EXPECT_EQ(again.SerializeAsString(), snapshot.SerializeAsString());
  EXPECT_EQ(restored.alarms_active(), monitor_.alarms_active());

  const v1::Histogram next = Hist("A/h", 32, Bell(0.3));
  const std::string body = next.SerializeAsString();
  const std::string_view frames[] = {next.name(), body};
  const MonitorResult a = monitor_.OnMessage(frames, 7);
  const MonitorResult b = restored.OnMessage(frames, 7);
  EXPECT_EQ(a.verdict->SerializeAsString(), b.verdict->SerializeAsString());
  EXPECT_EQ(a.alarm.has_value(), b.alarm.has_value());
}

TEST_F(MonitorTest, InconsistentSnapshotIsRefusedAndStateKept) {
  Send(Hist("A/h", 1, Bell()));
  const std::string before = State();
  v1::Snapshot bad;
  monitor_.SaveTo(bad);
  bad.mutable_histograms(0)->mutable_ewma()->mutable_weight()->RemoveLast();
  EXPECT_TRUE(monitor_.RestoreFrom(bad));
  EXPECT_EQ(State(), before);
}

TEST_F(MonitorTest, TemplateViewShowsTheCurrentTemplate) {
  Send(Hist("A/h", 1, Bell()));
  const auto view = monitor_.Template("A/h");
  ASSERT_TRUE(view);
  EXPECT_EQ(view->mu_size(), 20);
  EXPECT_EQ(view->sigma_size(), 20);
  EXPECT_EQ(view->last_pulls_size(), 20);
  EXPECT_EQ(view->last_run(), 1u);
  EXPECT_EQ(view->axes_size(), 1);
  EXPECT_GT(view->integral(), 0.0);
  EXPECT_FALSE(monitor_.Template("nothing"));
}

// The reference figures: labelled toy runs through the monitor give the paper's chi2.
TEST_F(MonitorTest, VerdictsMatchTheReferenceImplementation) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n  alpha: 0.5\n");
  const RunTable table = ReadRunTable(std::string(DINAMO_TEST_DATA) + "/toy_0.csv");
  std::ifstream golden(std::string(DINAMO_TEST_DATA) + "/s_alpha0.5_0.csv");
  std::string line;
  std::getline(golden, line);
  std::map<std::int64_t, double> chi2;
  while (std::getline(golden, line)) {
    const auto comma = line.find(',');
    chi2[std::stoll(line.substr(0, comma))] = std::stod(line.substr(comma + 1));
  }
  for (std::size_t i = 0; i < 300; ++i) {
    const RunRecord& r = table.runs[i];
    const v1::Label label = r.label == Label::kGood ? v1::LABEL_GOOD : v1::LABEL_BAD;
    const MonitorResult m =
        Send(Hist("T/h", static_cast<std::uint64_t>(r.run) + 1, r.counts, label));
    ASSERT_TRUE(m.verdict) << "run " << r.run;
    const double want = chi2.at(r.run);
    EXPECT_LE(std::abs(m.verdict->chi2() - want) / std::abs(want), 1e-9) << "run " << r.run;
  }
}

// ---------------------------------------------------------------------------------------------
// Labels and the journal

// A toy-like run: a bell that drifts, sometimes an odd one.
std::vector<double> Drifting(std::uint64_t run) {
  return run % 7 == 3 ? Bell(5.0) : Bell(0.05 * static_cast<double>(run % 11));
}

v1::Label TrueLabel(std::uint64_t run) { return run % 7 == 3 ? v1::LABEL_BAD : v1::LABEL_GOOD; }

TEST_F(MonitorTest, LateLabelsInAnyOrderGiveTheTemplateOfOnTimeLabels) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n  journal_runs: 40\n");
  constexpr std::uint64_t kRuns = 120;
  for (std::uint64_t run = 1; run <= kRuns; ++run) {
    Send(Hist("On/h", run, Drifting(run), TrueLabel(run)));
  }
  for (unsigned seed : {1u, 2u, 3u}) {
    const std::string name = "Late/h" + std::to_string(seed);
    std::mt19937 rng(seed);
    std::vector<std::uint64_t> pending;
    for (std::uint64_t run = 1; run <= kRuns; ++run) {
      Send(Hist(name, run, Drifting(run)));
      pending.push_back(run);
      std::shuffle(pending.begin(), pending.end(), rng);
      // Label some of the pending runs, always before they leave the journal.
      while (!pending.empty() &&
             (rng() % 3 == 0 || run - pending.front() >= 35 ||
              std::any_of(pending.begin(), pending.end(), [&](auto r) { return run - r >= 35; }))) {
        auto oldest = std::min_element(pending.begin(), pending.end());
        const std::uint64_t r = rng() % 2 == 0 ? *oldest : pending.back();
        ASSERT_FALSE(Relabel(name, r, TrueLabel(r)).refused) << "run " << r;
        pending.erase(std::find(pending.begin(), pending.end(), r));
      }
    }
    for (std::uint64_t r : pending) {
      ASSERT_FALSE(Relabel(name, r, TrueLabel(r)).refused) << "run " << r;
    }
    EXPECT_EQ(TemplateOf(name), TemplateOf("On/h")) << "seed " << seed;
  }
}

TEST_F(MonitorTest, ContradictingLaterLabelWins) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n");
  for (std::uint64_t run = 1; run <= 10; ++run) {
    Send(Hist("On/h", run, Drifting(run), TrueLabel(run)));
    Send(Hist("Late/h", run, Drifting(run)));
  }
  for (std::uint64_t run = 1; run <= 10; ++run) {
    ASSERT_FALSE(Relabel("Late/h", run, v1::LABEL_BAD).refused);
  }
  for (std::uint64_t run = 10; run >= 1; --run) {
    const CommandOutcome again = Relabel("Late/h", run, TrueLabel(run));
    ASSERT_FALSE(again.refused);
    EXPECT_EQ(again.affected, 1u);
  }
  EXPECT_EQ(TemplateOf("Late/h"), TemplateOf("On/h"));
  const std::string before = TemplateOf("Late/h");
  EXPECT_FALSE(Relabel("Late/h", 4, TrueLabel(4)).refused);  // idempotent
  EXPECT_EQ(TemplateOf("Late/h"), before);
}

TEST_F(MonitorTest, LabelsThatCannotApplyAreRefusedWithTheReason) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n  journal_runs: 5\n");
  for (std::uint64_t run = 1; run <= 10; ++run) {
    Send(Hist("A/h", run, Drifting(run)));
  }
  Send(Hist("A/h", 12, Drifting(12)));
  const std::string before = State();
  const auto refused = [&](const CommandOutcome& o) { return o.refused.value_or(""); };
  EXPECT_NE(refused(Relabel("A/h", 3, v1::LABEL_GOOD)).find("older than the journal"),
            std::string::npos);
  EXPECT_NE(refused(Relabel("A/h", 11, v1::LABEL_GOOD)).find("never seen"), std::string::npos);
  EXPECT_NE(refused(Relabel("B/h", 10, v1::LABEL_GOOD)).find("unknown histogram"),
            std::string::npos);
  EXPECT_NE(refused(Relabel("A/h", 10, v1::LABEL_UNSPECIFIED)).find("LABEL_GOOD"),
            std::string::npos);
  EXPECT_EQ(State(), before);
}

TEST_F(MonitorTest, NonFinalRunIsNotJournalled) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n");
  Send(Hist("A/h", 1, Drifting(1)));
  Send(Hist("A/h", 2, Drifting(2), v1::LABEL_UNSPECIFIED, false));
  EXPECT_TRUE(Relabel("A/h", 2, v1::LABEL_GOOD).refused);
  EXPECT_FALSE(Relabel("A/h", 1, v1::LABEL_GOOD).refused);
  EXPECT_EQ(Learned("A/h"), 1u);
}

TEST_F(MonitorTest, WholeRunLabelAppliesToEveryHistogramWithThatRun) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n");
  for (const char* name : {"A/h", "B/h", "C/h"}) {
    Send(Hist(name, 1, Drifting(1)));
  }
  Send(Hist("A/h", 2, Drifting(2)));
  Send(Hist("B/h", 2, Drifting(2)));
  const CommandOutcome all = Relabel("", 2, v1::LABEL_GOOD, true);
  ASSERT_FALSE(all.refused);
  EXPECT_EQ(all.affected, 2u);
  EXPECT_EQ(Learned("A/h"), 1u);
  EXPECT_EQ(Learned("B/h"), 1u);
  EXPECT_EQ(Learned("C/h"), 0u);
  EXPECT_TRUE(Relabel("", 3, v1::LABEL_GOOD, true).refused);
}

// ---------------------------------------------------------------------------------------------
// Alarm lifecycle

class AlarmTest : public MonitorTest {
 protected:
  void SetUp() override {
    Configure("  warmup_runs: 0\n  auto_accept: never\n  threshold: 1.0\n" + extra_);
    for (std::uint64_t run = 1; run <= 5; ++run) {
      Send(Hist("A/h", run, Bell(), v1::LABEL_GOOD));
    }
    next_ = 6;
  }
  // One unlabelled run, odd or normal; the alarm event it made, if any.
  std::optional<v1::AlarmEvent> Next(bool odd, std::int64_t now_unix_ns = kNow) {
    const MonitorResult r = SendAt(Hist("A/h", next_++, odd ? Bell(6.0) : Bell()), now_unix_ns);
    return r.alarm ? std::optional(r.alarm->event()) : std::nullopt;
  }
  static constexpr std::int64_t kNow = 1'000'000'000'000'000'000;  // ns
  static constexpr std::int64_t kNowS = kNow / 1'000'000'000;
  std::string extra_;
  std::uint64_t next_ = 1;
};

TEST_F(AlarmTest, AcknowledgedAlarmClearsToNormal) {
  EXPECT_EQ(Next(true), v1::ALARM_EVENT_RAISED);
  const CommandOutcome ack = monitor_.Acknowledge("A/h", who_, kNow);
  ASSERT_FALSE(ack.refused);
  ASSERT_EQ(ack.alarms.size(), 1u);
  EXPECT_EQ(ack.alarms[0].event(), v1::ALARM_EVENT_ACKNOWLEDGED);
  EXPECT_EQ(ack.alarms[0].user(), "shifter");
  EXPECT_EQ(ack.alarms[0].comment(), "looked at it");
  EXPECT_EQ(StateOf("A/h"), v1::ALARM_STATE_ACKNOWLEDGED);
  EXPECT_EQ(Next(false), v1::ALARM_EVENT_CLEARED);
  EXPECT_EQ(StateOf("A/h"), v1::ALARM_STATE_NORMAL);
  EXPECT_TRUE(monitor_.Alarms("").alarms().empty());
}

TEST_F(AlarmTest, ReturnedAlarmStaysLatchedUntilAcknowledged) {
  EXPECT_EQ(Next(true), v1::ALARM_EVENT_RAISED);
  EXPECT_EQ(Next(false), v1::ALARM_EVENT_CLEARED);
  EXPECT_EQ(Next(false), std::nullopt);
  EXPECT_EQ(StateOf("A/h"), v1::ALARM_STATE_RETURNED_UNACKNOWLEDGED);
  EXPECT_EQ(monitor_.Alarms("A/").alarms_size(), 1);
  EXPECT_EQ(monitor_.Alarms("B/").alarms_size(), 0);
  ASSERT_FALSE(monitor_.Acknowledge("A/h", who_, kNow).refused);
  EXPECT_EQ(StateOf("A/h"), v1::ALARM_STATE_NORMAL);
  EXPECT_TRUE(monitor_.Acknowledge("A/h", who_, kNow).refused);  // nothing to acknowledge
  EXPECT_TRUE(monitor_.Acknowledge("B/h", who_, kNow).refused);  // unknown histogram
}

TEST_F(AlarmTest, ShelvingSilencesAndExpiresByItself) {
  EXPECT_EQ(Next(true), v1::ALARM_EVENT_RAISED);
  EXPECT_TRUE(monitor_.Shelve("A/h", kNowS - 1, who_, kNow).refused);  // not in the future
  const CommandOutcome shelved = monitor_.Shelve("A/h", kNowS + 60, who_, kNow);
  ASSERT_FALSE(shelved.refused);
  EXPECT_EQ(shelved.alarms[0].shelved_until_unix_s(), kNowS + 60);
  EXPECT_EQ(Next(true, kNow + 1'000'000'000), std::nullopt);
  EXPECT_TRUE(monitor_.ExpireShelving(kNow + 59'000'000'000).empty());
  const auto expired = monitor_.ExpireShelving(kNow + 60'000'000'000);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].event(), v1::ALARM_EVENT_UNSHELVED);
  EXPECT_EQ(Next(true, kNow + 61'000'000'000), v1::ALARM_EVENT_RAISED);  // still anomalous
}

TEST_F(AlarmTest, ShelvingExpiresWithTheNextVerdictToo) {
  ASSERT_FALSE(monitor_.Shelve("A/h", kNowS + 10, who_, kNow).refused);
  const MonitorResult r = SendAt(Hist("A/h", next_++, Bell(6.0)), kNow + 11'000'000'000);
  ASSERT_TRUE(r.unshelved_alarm);
  EXPECT_EQ(r.unshelved_alarm->event(), v1::ALARM_EVENT_UNSHELVED);
  ASSERT_TRUE(r.alarm);
  EXPECT_EQ(r.alarm->event(), v1::ALARM_EVENT_RAISED);
}

TEST_F(AlarmTest, DisabledAlarmNeverRaisesUntilEnabled) {
  ASSERT_FALSE(monitor_.Disable("A/h", who_, kNow).refused);
  EXPECT_EQ(StateOf("A/h"), v1::ALARM_STATE_DISABLED);
  EXPECT_EQ(Next(true), std::nullopt);
  EXPECT_EQ(Next(true), std::nullopt);
  EXPECT_TRUE(monitor_.Shelve("A/h", kNowS + 10, who_, kNow).refused);
  ASSERT_FALSE(monitor_.Enable("A/h", who_, kNow).refused);
  EXPECT_TRUE(monitor_.Enable("A/h", who_, kNow).refused);
  EXPECT_EQ(Next(true), v1::ALARM_EVENT_RAISED);
}

class OnDelayTest : public AlarmTest {
 protected:
  OnDelayTest() { extra_ = "  on_delay: 3\n"; }
};

TEST_F(OnDelayTest, RaisesOnlyAfterConsecutiveAnomalousRuns) {
  EXPECT_EQ(Next(true), std::nullopt);
  EXPECT_EQ(Next(true), std::nullopt);
  EXPECT_EQ(Next(false), std::nullopt);  // the count starts over
  EXPECT_EQ(Next(true), std::nullopt);
  EXPECT_EQ(Next(true), std::nullopt);
  EXPECT_EQ(Next(true), v1::ALARM_EVENT_RAISED);
}

class ChatterTest : public AlarmTest {
 protected:
  ChatterTest() { extra_ = "  off_delay: 3\n"; }
};

TEST_F(ChatterTest, HistogramHoveringAtTheThresholdRaisesOnce) {
  EXPECT_EQ(Next(true), v1::ALARM_EVENT_RAISED);
  ASSERT_FALSE(monitor_.Acknowledge("A/h", who_, kNow).refused);
  int events = 0;
  for (int i = 0; i < 6; ++i) {
    events += Next(i % 2 == 0).has_value();
  }
  EXPECT_EQ(events, 0);
  // The loop ended on one normal run: two more make the three that clear it.
  EXPECT_EQ(Next(false), std::nullopt);
  EXPECT_EQ(Next(false), v1::ALARM_EVENT_CLEARED);
}

TEST_F(MonitorTest, MinorSeverityBetweenTheTwoThresholds) {
  Configure(
      "  warmup_runs: 0\n  auto_accept: never\n  threshold: 100\n"
      "  warning_threshold: 1\n");
  for (std::uint64_t run = 1; run <= 5; ++run) {
    Send(Hist("A/h", run, Bell(), v1::LABEL_GOOD));
  }
  const MonitorResult r = Send(Hist("A/h", 6, Bell(6.0)));
  EXPECT_EQ(r.verdict->severity(), v1::SEVERITY_MINOR);
  ASSERT_TRUE(r.alarm);
  EXPECT_EQ(r.alarm->severity(), v1::SEVERITY_MINOR);
}

TEST_F(MonitorTest, RebaselineResetsTheMatchingTemplates) {
  Configure("  warmup_runs: 0\n  auto_accept: always\n");
  for (const char* name : {"VELO/a", "VELO/b", "RICH/a"}) {
    Send(Hist(name, 1, Bell()));
    Send(Hist(name, 2, Bell()));
  }
  const CommandOutcome r = monitor_.Rebaseline("VELO/*", who_, 5);
  ASSERT_FALSE(r.refused);
  EXPECT_EQ(r.affected, 2u);
  ASSERT_EQ(r.alarms.size(), 2u);
  EXPECT_EQ(r.alarms[0].event(), v1::ALARM_EVENT_REBASELINED);
  EXPECT_EQ(Learned("VELO/a"), 0u);
  EXPECT_EQ(Learned("VELO/b"), 0u);
  EXPECT_EQ(Learned("RICH/a"), 2u);
  EXPECT_TRUE(Relabel("VELO/a", 2, v1::LABEL_BAD).refused);  // the journal went with it
  EXPECT_TRUE(monitor_.Rebaseline("HCAL/*", who_, 5).refused);
  EXPECT_FALSE(Send(Hist("VELO/a", 3, Bell())).rejection);
  EXPECT_EQ(Learned("VELO/a"), 1u);
}

TEST_F(MonitorTest, SnapshotKeepsTheJournalAndAcknowledgements) {
  Configure("  warmup_runs: 0\n  auto_accept: never\n");
  for (std::uint64_t run = 1; run <= 20; ++run) {
    Send(Hist("On/h", run, Drifting(run), TrueLabel(run)));
    Send(Hist("Late/h", run, Drifting(run), run <= 10 ? TrueLabel(run) : v1::LABEL_UNSPECIFIED));
  }
  Send(Hist("On/h", 21, Bell(6.0)));
  ASSERT_FALSE(monitor_.Acknowledge("On/h", who_, 5).refused);
  v1::Snapshot snapshot;
  monitor_.SaveTo(snapshot);
  v1::Snapshot parsed;
  ASSERT_TRUE(parsed.ParseFromString(snapshot.SerializeAsString()));
  ASSERT_EQ(parsed.histograms(0).name(), "Late/h");
  ASSERT_EQ(parsed.histograms(0).journal_size(), 20);

  Monitor restored(resolver_);
  ASSERT_FALSE(restored.RestoreFrom(parsed));
  v1::SetLabel l;
  l.set_histogram("Late/h");
  for (std::uint64_t run = 11; run <= 20; ++run) {
    l.set_run(run);
    l.set_label(TrueLabel(run));
    ASSERT_FALSE(restored.SetLabel(l, who_).refused) << "run " << run;
  }
  const auto late = restored.Template("Late/h");
  const auto on = monitor_.Template("On/h");
  EXPECT_EQ(std::vector<double>(late->mu().begin(), late->mu().end()),
            std::vector<double>(on->mu().begin(), on->mu().end()));
  EXPECT_EQ(std::vector<double>(late->sigma().begin(), late->sigma().end()),
            std::vector<double>(on->sigma().begin(), on->sigma().end()));
  const v1::AlarmTable table = restored.Alarms("On/");
  ASSERT_EQ(table.alarms_size(), 1);
  EXPECT_EQ(table.alarms(0).state(), v1::ALARM_STATE_ACKNOWLEDGED);
  EXPECT_EQ(table.alarms(0).user(), "shifter");
}

TEST_F(MonitorTest, SnapshotWithAJournalButNoBaseIsRefused) {
  Send(Hist("A/h", 1, Bell()));
  v1::Snapshot bad;
  monitor_.SaveTo(bad);
  bad.mutable_histograms(0)->clear_journal_base();
  EXPECT_TRUE(monitor_.RestoreFrom(bad));
}

// ---------------------------------------------------------------------------------------------
// Run summaries

TEST_F(MonitorTest, RunSummaryCountsSeveritiesAndNamesTheWorst) {
  Configure("  warmup_runs: 0\n  auto_accept: always\n  threshold: 1.0\n");
  const std::vector<std::string> names = {"A/h", "B/h", "C/h", "D/h", "E/h", "F/h", "G/h"};
  for (const std::string& name : names) {
    Send(Hist(name, 1, Bell()));
  }
  // Nothing tells the monitor run 1 is complete: the timer does.
  EXPECT_TRUE(monitor_.DueSummaries(1 + 29'000'000'000, 30).empty());
  const auto first = monitor_.DueSummaries(1 + 30'000'000'000, 30);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].histograms(), 7u);

  std::optional<v1::RunSummary> summary;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const MonitorResult r = Send(Hist(names[i], 2, Bell(i < 2 ? 6.0 + i : 0.0)));
    EXPECT_EQ(r.summary.has_value(), i + 1 == names.size()) << names[i];
    if (r.summary) {
      summary = r.summary;
    }
  }
  ASSERT_TRUE(summary);
  EXPECT_EQ(summary->run(), 2u);
  EXPECT_EQ(summary->histograms(), 7u);
  EXPECT_EQ(summary->major(), 2u);
  EXPECT_EQ(summary->none() + summary->minor(), 5u);
  ASSERT_EQ(summary->worst_size(), 5);
  const std::set<std::string> top = {summary->worst(0).histogram(), summary->worst(1).histogram()};
  EXPECT_EQ(top, (std::set<std::string>{"A/h", "B/h"}));
  EXPECT_EQ(summary->worst(0).severity(), v1::SEVERITY_MAJOR);
  EXPECT_GE(summary->worst(0).log_reduced_chi2(), summary->worst(1).log_reduced_chi2());
  EXPECT_GE(summary->worst(1).log_reduced_chi2(), summary->worst(2).log_reduced_chi2());
}

TEST_F(MonitorTest, RefusedFinalOfAKnownHistogramCountsAsInvalid) {
  Send(Hist("A/h", 1, Bell()));
  Send(Hist("B/h", 1, Bell()));
  ASSERT_EQ(monitor_.DueSummaries(1'000'000'000'000, 30).size(), 1u);
  std::vector<double> bad = Bell();
  bad[3] = -1.0;
  EXPECT_TRUE(Send(Hist("A/h", 2, bad)).rejection);
  const MonitorResult r = Send(Hist("B/h", 2, Bell()));
  ASSERT_TRUE(r.summary);
  EXPECT_EQ(r.summary->invalid(), 1u);
  EXPECT_EQ(r.summary->histograms(), 2u);
}
}  // namespace
}  // namespace dinamo::daemon
