// dinamod with one histogram on method transformer next to EWMA ones (issue 5): verdicts of
// both methods come back, trainings run on the worker and are counted, a late label over the
// control socket relearns in the background, SIGTERM stops at once and the restart restores the
// transformer template from the snapshot.

#include <cmath>
#include <csignal>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "integration/bus_client.h"
#include "support/shapes.h"

namespace dinamo::testing {
namespace {

class TransformerDaemonTest : public ::testing::Test {
 protected:
  TransformerDaemonTest() : daemon_(Name()) {
    daemon_.WriteConfig(daemon_.ConfigText(1e6) +
                        "rules:\n  - {match: \"T/*\", method: transformer}\n"
                        "training:\n  workers: 1\n  max_steps: 20\n");
  }

  static std::string Name() {
    return ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }

  void SendRuns(Bus& bus, std::uint64_t first, std::uint64_t last) {
    for (std::uint64_t run = first; run <= last; ++run) {
      const double shift = 0.1 * static_cast<double>(run);
      bus.Send(Bus::Make("T/a", run, Bell(shift), v1::LABEL_GOOD));
      for (int i = 0; i < 3; ++i) {
        bus.Send(Bus::Make("E/" + std::to_string(i), run, Bell(shift), v1::LABEL_GOOD));
      }
    }
  }

  DaemonProcess daemon_;
};

TEST_F(TransformerDaemonTest, VerdictsOfBothMethodsAndTrainingsOnTheWorker) {
  daemon_.Start();
  {
    Bus bus(daemon_);
    ASSERT_TRUE(bus.WaitReady(daemon_)) << daemon_.Log();
    SendRuns(bus, 1, 6);
    // One pass over the stream: 6 runs of T/a and of E/0 to E/2.
    std::map<std::string, std::map<std::uint64_t, v1::Verdict>> verdicts;
    for (const std::string& body : bus.Take("verdict/", 24, 30s)) {
      v1::Verdict v;
      ASSERT_TRUE(v.ParseFromString(body));
      verdicts[v.histogram()][v.run()] = v;
    }
    const auto& transformer = verdicts["T/a"];
    const auto& ewma = verdicts["E/2"];
    ASSERT_EQ(transformer.size(), 6u) << daemon_.Log();
    ASSERT_EQ(ewma.size(), 6u);
    for (const auto& [run, v] : transformer) {
      EXPECT_EQ(v.method(), "transformer") << run;
      EXPECT_TRUE(v.learned()) << run;
    }
    for (const auto& [run, v] : ewma) {
      EXPECT_EQ(v.method(), "ewma") << run;
    }
    // Every good run is trained on, coalesced or not: wait until the worker has caught up.
    double completed = 0.0;
    for (int i = 0; i < 300 && completed < 1.0; ++i) {
      completed =
          MetricValue(HttpGet(daemon_.http(), "/metrics"), "dinamo_trainings_completed_total");
      std::this_thread::sleep_for(100ms);
    }
    const std::string metrics = HttpGet(daemon_.http(), "/metrics");
    EXPECT_GE(MetricValue(metrics, "dinamo_trainings_completed_total"), 1.0) << metrics;
    EXPECT_GE(MetricValue(metrics, "dinamo_training_steps_total"), 1.0);
    EXPECT_EQ(MetricValue(metrics, "dinamo_trainings_dropped_total"), 0.0);
    EXPECT_NE(metrics.find("dinamo_training_queue_depth"), std::string::npos);

    // A late label over the control socket, once the worker is idle (nothing queued or
    // running, so that its training is a new submission): the run leaves the good runs.
    for (int i = 0; i < 300; ++i) {
      const std::string m = HttpGet(daemon_.http(), "/metrics");
      if (MetricValue(m, "dinamo_training_queue_depth") == 0.0 &&
          MetricValue(m, "dinamo_trainings_running") == 0.0) {
        break;
      }
      std::this_thread::sleep_for(100ms);
    }
    const double submitted =
        MetricValue(HttpGet(daemon_.http(), "/metrics"), "dinamo_trainings_submitted_total");
    v1::Command label;
    label.mutable_set_label()->set_histogram("T/a");
    label.mutable_set_label()->set_run(3);
    label.mutable_set_label()->set_label(v1::LABEL_BAD);
    const auto reply = Call(daemon_, label);
    ASSERT_TRUE(reply);
    ASSERT_TRUE(reply->ok()) << reply->error();
    EXPECT_EQ(reply->action().affected(), 1u);
    v1::Command get;
    get.mutable_get_template()->set_histogram("T/a");
    EXPECT_EQ(Call(daemon_, get)->template_().learned_runs(), 5u);
    double after = 0.0;
    for (int i = 0; i < 300 && after <= submitted; ++i) {
      after = MetricValue(HttpGet(daemon_.http(), "/metrics"), "dinamo_trainings_submitted_total");
      std::this_thread::sleep_for(100ms);
    }
    EXPECT_GT(after, submitted);
    EXPECT_EQ(MetricValue(HttpGet(daemon_.http(), "/metrics"), "dinamo_transformer_relearns_total"),
              1.0);
  }
  daemon_.Signal(SIGTERM);
  const auto code = daemon_.Wait(5s);  // the contract: a pending training never holds the stop
  ASSERT_TRUE(code) << daemon_.Log();
  EXPECT_EQ(*code, 0) << daemon_.Log();

  // The restart restores the transformer template: its next run is scored, not refused.
  daemon_.Start();
  Bus bus(daemon_);
  ASSERT_TRUE(bus.WaitReady(daemon_)) << daemon_.Log();
  SendRuns(bus, 7, 7);
  const auto after = bus.Collect("T/a", 7, 7);
  ASSERT_EQ(after.size(), 1u) << daemon_.Log();
  EXPECT_EQ(after.begin()->second.method(), "transformer");
  EXPECT_FALSE(after.begin()->second.warmup());
  EXPECT_EQ(daemon_.Log().find("snapshot skips"), std::string::npos) << daemon_.Log();
  EXPECT_EQ(daemon_.Stop(), 0);
}

}  // namespace
}  // namespace dinamo::testing
