#include "monitor.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

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

  MonitorResult Frames(const std::string& topic, const std::string& body) {
    const std::string_view frames[] = {topic, body};
    return monitor_.OnMessage(frames, 1);
  }

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
  EXPECT_EQ(std::abs(r.verdict->pulls(0).pull()), largest);
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

}  // namespace
}  // namespace dinamo::daemon
