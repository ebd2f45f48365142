#include "transformer_training.h"

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "monitor.h"
#include "support/shapes.h"

namespace dinamo::daemon {
namespace {

using dinamo::testing::Bell;

v1::Histogram Hist(const std::string& name, std::uint64_t run, double shift = 0.0) {
  v1::Histogram h;
  h.set_name(name);
  h.set_run(run);
  h.set_final(true);
  h.set_label(v1::LABEL_GOOD);
  const std::vector<double> counts = Bell(shift);
  h.add_axes()->set_bins(static_cast<std::uint32_t>(counts.size()));
  h.mutable_counts()->Add(counts.begin(), counts.end());
  return h;
}

// A training that waits for the test to let it go, then takes one real step (so the model
// that comes back differs from the one that went out).
class SlowTrainer {
 public:
  int Train(TransformerModel& model, const std::atomic<bool>& cancel) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ++started_;
      cv_.notify_all();
      while (!open_ && !cancel) {
        cv_.wait_for(lock, std::chrono::milliseconds(5));
      }
    }
    model.TrainStep();
    return 1;
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }
  void WaitStarted(int n) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [&] { return started_ >= n; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
  int started_ = 0;
};

class TransformerTrainingTest : public ::testing::Test {
 protected:
  TransformerTrainingTest()
      : config_(std::make_shared<const Config>(
            ParseConfig("input:\n  connect: [\"tcp://127.0.0.1:5550\"]\n"
                        "defaults:\n  warmup_runs: 0\n  threshold: 100\n"
                        "rules:\n  - {match: \"T/*\", method: transformer}\n",
                        "test.yaml"))),
        resolver_(config_),
        monitor_(resolver_),
        pool_(io_, {1, 8}),
        trainer_(pool_, config_->training,
                 [this](TransformerModel& m, int, const std::atomic<bool>& cancel) {
                   return slow_.Train(m, cancel);
                 }) {
    monitor_.set_learned_hook(
        [this](const std::string& name, TemplateModel& model) { trainer_.OnLearned(name, model); });
  }

  static void SetUpTestSuite() { RegisterTransformerMethod(TrainingConfig{}); }

  v1::Verdict Score(const v1::Histogram& h) {
    const std::string body = h.SerializeAsString();
    const std::string_view frames[] = {h.name(), body};
    MonitorResult r = monitor_.OnMessage(frames, 1);
    EXPECT_FALSE(r.rejection) << r.rejection->detail;
    return r.verdict.value_or(v1::Verdict{});
  }

  void RunUntilCompleted(std::uint64_t n) {
    for (int i = 0; i < 60000 && trainer_.counters().completed < n; ++i) {
      io_.restart();
      if (io_.poll() == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  }

  std::vector<double> Mu(const std::string& name) {
    const auto view = monitor_.Template(name);
    return {view->mu().begin(), view->mu().end()};
  }

  boost::asio::io_context io_;
  std::shared_ptr<const Config> config_;
  SettingsResolver resolver_;
  Monitor monitor_;
  SlowTrainer slow_;
  TrainingPool pool_;
  TransformerTrainer trainer_;
};

TEST_F(TransformerTrainingTest, VerdictsKeepComingWhileATrainingIsSlow) {
  EXPECT_EQ(Score(Hist("T/a", 1)).method(), "transformer");
  slow_.WaitStarted(1);  // the training of T/a is on the worker and does not come back

  // Meanwhile every message is scored at once: EWMA histograms and the transformer one.
  int ewma = 0;
  int transformer = 0;
  for (std::uint64_t run = 2; run < 12; ++run) {
    for (int i = 0; i < 5; ++i) {
      ewma += Score(Hist("E/" + std::to_string(i), run)).method() == "ewma";
    }
    transformer +=
        Score(Hist("T/a", run, 0.1 * static_cast<double>(run))).method() == "transformer";
  }
  EXPECT_EQ(ewma, 50);
  EXPECT_EQ(transformer, 10);
  EXPECT_EQ(trainer_.counters().completed, 0u);
  EXPECT_EQ(pool_.running(), 1u);

  slow_.Open();
  RunUntilCompleted(2);
  // The good runs that came while it ran were owed one more training, from its weights.
  EXPECT_EQ(trainer_.counters().submitted, 2u);
  EXPECT_EQ(trainer_.counters().completed, 2u);
}

TEST_F(TransformerTrainingTest, TrainedModelPostedBackReplacesTheOldOne) {
  Score(Hist("T/a", 1));
  slow_.WaitStarted(1);
  const std::vector<double> before = Mu("T/a");
  slow_.Open();
  RunUntilCompleted(1);
  const std::vector<double> after = Mu("T/a");
  ASSERT_EQ(after.size(), before.size());
  EXPECT_NE(after, before);
  EXPECT_EQ(trainer_.counters().steps, 1u);
}

TEST_F(TransformerTrainingTest, WorkersTemplateForTheNextRunEqualsALoopForwardPass) {
  auto model = std::make_unique<DeferredTransformer>(
      std::make_shared<const TransformerModel>(TransformerOptions{.bins = 20}));
  ASSERT_TRUE(model->Learn(7, Normalise(Bell(0.0))));
  trainer_.OnLearned("x", *model);
  slow_.Open();
  RunUntilCompleted(1);
  // Computed by the worker from the run after run 7 on, as the loop would compute them.
  ASSERT_EQ(model->slot()->expected_first, 8);
  ASSERT_EQ(model->slot()->expected.size(), 64u);
  EXPECT_TRUE(model->slot()->pending.empty());
  for (std::int64_t run : {8, 71}) {
    Expectation cached, computed;
    model->Expect(run, cached);
    model->slot()->trained->Expect(run, computed);
    EXPECT_EQ(cached.mu, computed.mu) << run;
    EXPECT_EQ(cached.sigma_mu, computed.sigma_mu) << run;
  }
  EXPECT_EQ(model->learned_runs(), 1u);
}

TEST_F(TransformerTrainingTest, SnapshotRoundTripGivesTheSameScores) {
  RegisterTransformerPersistence(TrainingConfig{}, nullptr);
  slow_.Open();
  for (std::uint64_t run = 1; run <= 3; ++run) {
    Score(Hist("T/a", run, 0.2 * static_cast<double>(run)));
    Score(Hist("E/a", run));
    RunUntilCompleted(run);  // one training per good run, each back before the next run
  }
  v1::Snapshot snapshot;
  monitor_.SaveTo(snapshot);
  ASSERT_EQ(snapshot.histograms_size(), 2);

  Monitor restored(resolver_);
  const auto why = restored.RestoreFrom(snapshot);
  ASSERT_FALSE(why) << *why;
  const v1::Histogram next = Hist("T/a", 4, 0.5);
  const std::string body = next.SerializeAsString();
  const std::string_view frames[] = {next.name(), body};
  const MonitorResult after = restored.OnMessage(frames, 1);
  const v1::Verdict without = Score(next);
  ASSERT_TRUE(after.verdict);
  EXPECT_EQ(after.verdict->method(), "transformer");
  EXPECT_EQ(after.verdict->chi2(), without.chi2());
  EXPECT_EQ(restored.Template("T/a")->learned_runs(), monitor_.Template("T/a")->learned_runs());
}

TEST_F(TransformerTrainingTest, LateLabelForATransformerIsRefusedWithAReason) {
  Score(Hist("T/a", 1));
  v1::SetLabel l;
  l.set_histogram("T/a");
  l.set_run(1);
  l.set_label(v1::LABEL_BAD);
  const CommandOutcome out = monitor_.SetLabel(l, Actor{});
  ASSERT_TRUE(out.refused);
  EXPECT_NE(out.refused->find("journal"), std::string::npos) << *out.refused;
  slow_.Open();
}

}  // namespace
}  // namespace dinamo::daemon
