#include "transformer_training.h"

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
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

v1::Histogram Hist(const std::string& name, std::uint64_t run, double shift = 0.0,
                   v1::Label label = v1::LABEL_GOOD) {
  v1::Histogram h;
  h.set_name(name);
  h.set_run(run);
  h.set_final(true);
  h.set_label(label);
  const std::vector<double> counts = Bell(shift);
  h.add_axes()->set_bins(static_cast<std::uint32_t>(counts.size()));
  h.mutable_counts()->Add(counts.begin(), counts.end());
  return h;
}

// A training that waits for the test to let it go, then takes one real step (so the model
// that comes back differs from the one that went out). It notes whether it ever ran on the
// thread that built it (the test's loop).
class SlowTrainer {
 public:
  int Train(TransformerModel& model, const std::atomic<bool>& cancel) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      on_loop_ = on_loop_ || std::this_thread::get_id() == loop_;
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
  void Close() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = false;
  }
  bool TrainedOnLoop() {
    std::lock_guard<std::mutex> lock(mutex_);
    return on_loop_;
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
  std::thread::id loop_ = std::this_thread::get_id();
  bool on_loop_ = false;
};

class TransformerTrainingTest : public ::testing::Test {
 protected:
  TransformerTrainingTest()
      : config_(std::make_shared<const Config>(
            ParseConfig("input:\n  connect: [\"tcp://127.0.0.1:5550\"]\n"
                        "defaults:\n  warmup_runs: 0\n  threshold: 100\n"
                        "rules:\n  - {match: \"T/*\", method: transformer}\n"
                        "  - {match: \"N/*\", method: transformer, auto_accept: never}\n"
                        "  - {match: \"S/*\", method: transformer, journal_runs: 2}\n",
                        "test.yaml"))),
        resolver_(config_),
        monitor_(resolver_),
        pool_(io_, {1, 8}),
        trainer_(pool_, config_->training,
                 [this](TransformerModel& m, int, const std::atomic<bool>& cancel) {
                   return slow_.Train(m, cancel);
                 }) {
    monitor_.set_learned_hook([this](const std::string& name, TemplateModel& model) {
      if (const auto* t = dynamic_cast<const DeferredTransformer*>(&model)) {
        slots_[name] = t->slot();
      }
      trainer_.OnLearned(name, model);
    });
  }

  static void SetUpTestSuite() { RegisterTransformerMethod(TrainingConfig{}); }

  v1::Verdict Score(const v1::Histogram& h) {
    const std::string body = h.SerializeAsString();
    const std::string_view frames[] = {h.name(), body};
    MonitorResult r = monitor_.OnMessage(frames, 1);
    EXPECT_FALSE(r.rejection) << r.rejection->detail;
    return r.verdict ? *r.verdict : v1::Verdict{};
  }

  void RunUntilCompleted(std::uint64_t n) {
    for (int i = 0; i < 60000 && trainer_.counters().completed < n; ++i) {
      io_.restart();
      if (io_.poll() == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  }

  CommandOutcome Label(const std::string& name, std::uint64_t run, v1::Label label) {
    v1::SetLabel l;
    l.set_histogram(name);
    l.set_run(run);
    l.set_label(label);
    return monitor_.SetLabel(l, Actor{});
  }

  // The runs the last trained model of `name` has recorded.
  std::vector<std::int64_t> TrainedRuns(const std::string& name) {
    std::vector<std::int64_t> runs;
    for (const GoodRun& g : slots_.at(name)->trained->history()) {
      runs.push_back(g.run);
    }
    return runs;
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
  std::map<std::string, std::shared_ptr<TransformerSlot>> slots_;  // as the hook saw them
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

TEST_F(TransformerTrainingTest, LateGoodLabelAddsTheRunAndQueuesOneTrainingFromTheWeights) {
  slow_.Open();
  Score(Hist("N/a", 1));  // labelled good: learned and trained on
  RunUntilCompleted(1);
  EXPECT_FALSE(Score(Hist("N/a", 2, 0.3, v1::LABEL_UNSPECIFIED)).learned());  // auto: never
  ASSERT_EQ(TrainedRuns("N/a"), (std::vector<std::int64_t>{1}));
  const std::shared_ptr<const TransformerModel> before = slots_.at("N/a")->trained;
  const std::vector<double> mu_before = Mu("N/a");

  slow_.Close();
  const CommandOutcome out = Label("N/a", 2, v1::LABEL_GOOD);
  ASSERT_FALSE(out.refused) << *out.refused;
  EXPECT_EQ(out.affected, 1u);
  EXPECT_EQ(trainer_.counters().submitted, 2u);  // one training, queued
  EXPECT_EQ(trainer_.counters().relearns, 1u);
  EXPECT_EQ(monitor_.Template("N/a")->learned_runs(), 2u);
  slow_.WaitStarted(2);
  EXPECT_EQ(Mu("N/a"), mu_before);  // verdicts use the last trained model until it is back

  slow_.Open();
  RunUntilCompleted(2);
  EXPECT_EQ(TrainedRuns("N/a"), (std::vector<std::int64_t>{1, 2}));
  EXPECT_FALSE(slots_.at("N/a")->relearned);
  EXPECT_EQ(trainer_.counters().submitted, 2u);
  EXPECT_FALSE(slow_.TrainedOnLoop());

  // It went on from the weights and optimiser state it had, not from an untrained model.
  const Observation second = Normalise(Bell(0.3));
  auto expected = before->CloneTransformer();
  ASSERT_TRUE(expected->ReplaceHistory(
      {before->history()[0], {2, std::vector<float>(second.x.begin(), second.x.end())}}, 2));
  expected->TrainStep();
  Expectation want, got;
  expected->Expect(3, want);
  slots_.at("N/a")->trained->Expect(3, got);
  EXPECT_EQ(got.mu, want.mu);
  EXPECT_EQ(slots_.at("N/a")->trained->learned_runs(), 2u);
}

TEST_F(TransformerTrainingTest, LateBadLabelRemovesALearnedRunAndKeepsTheOthersDecisions) {
  slow_.Open();
  for (std::uint64_t run = 1; run <= 3; ++run) {
    Score(Hist("T/a", run, 0.1 * static_cast<double>(run)));
    RunUntilCompleted(run);
  }
  ASSERT_EQ(TrainedRuns("T/a"), (std::vector<std::int64_t>{1, 2, 3}));

  const CommandOutcome out = Label("T/a", 2, v1::LABEL_BAD);
  ASSERT_FALSE(out.refused) << *out.refused;
  EXPECT_EQ(monitor_.Template("T/a")->learned_runs(), 2u);
  RunUntilCompleted(4);
  EXPECT_EQ(TrainedRuns("T/a"), (std::vector<std::int64_t>{1, 3}));
  EXPECT_EQ(trainer_.counters().submitted, 4u);
  EXPECT_EQ(trainer_.counters().steps, 4u);
  EXPECT_FALSE(slow_.TrainedOnLoop());

  // The same label again changes nothing and trains nothing.
  EXPECT_FALSE(Label("T/a", 2, v1::LABEL_BAD).refused);
  EXPECT_EQ(trainer_.counters().submitted, 4u);
}

TEST_F(TransformerTrainingTest, LateLabelWhileTrainingIsOwedOneMoreWithTheCorrectedRuns) {
  Score(Hist("T/a", 1));
  slow_.WaitStarted(1);  // run 1's training is on the worker
  Score(Hist("T/a", 2, 0.2));
  ASSERT_FALSE(Label("T/a", 1, v1::LABEL_BAD).refused);
  EXPECT_EQ(trainer_.counters().submitted, 1u);  // nothing more while one runs

  slow_.Open();
  RunUntilCompleted(2);
  EXPECT_EQ(trainer_.counters().submitted, 2u);
  EXPECT_EQ(TrainedRuns("T/a"), (std::vector<std::int64_t>{2}));
  EXPECT_EQ(monitor_.Template("T/a")->learned_runs(), 1u);
}

TEST_F(TransformerTrainingTest, LateLabelsOutsideTheJournalAreRefusedAndChangeNothing) {
  slow_.Open();
  for (std::uint64_t run = 1; run <= 3; ++run) {
    Score(Hist("S/a", run));  // journal_runs 2: runs 2 and 3 kept
    RunUntilCompleted(run);
  }
  const auto older = Label("S/a", 1, v1::LABEL_BAD);
  ASSERT_TRUE(older.refused);
  EXPECT_NE(older.refused->find("older than the journal"), std::string::npos) << *older.refused;
  const auto unknown = Label("S/a", 7, v1::LABEL_BAD);
  ASSERT_TRUE(unknown.refused);
  EXPECT_NE(unknown.refused->find("never seen"), std::string::npos) << *unknown.refused;
  EXPECT_TRUE(Label("S/none", 2, v1::LABEL_BAD).refused);

  EXPECT_EQ(monitor_.Template("S/a")->learned_runs(), 3u);
  EXPECT_EQ(TrainedRuns("S/a"), (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(trainer_.counters().submitted, 3u);
}

TEST_F(TransformerTrainingTest, SnapshotKeepsTheJournalAndALateLabelNotTrainedYet) {
  RegisterTransformerPersistence(TrainingConfig{}, nullptr);
  slow_.Open();
  for (std::uint64_t run = 1; run <= 3; ++run) {
    Score(Hist("T/a", run, 0.1 * static_cast<double>(run)));
    RunUntilCompleted(run);
  }
  slow_.Close();
  ASSERT_FALSE(Label("T/a", 3, v1::LABEL_BAD).refused);
  slow_.WaitStarted(4);  // its training holds on the worker: the snapshot owes it
  v1::Snapshot snapshot;
  monitor_.SaveTo(snapshot);

  Monitor restored(resolver_);
  std::shared_ptr<TransformerSlot> slot;
  restored.set_learned_hook([&slot](const std::string&, TemplateModel& model) {
    slot = dynamic_cast<DeferredTransformer&>(model).slot();
  });
  const auto why = restored.RestoreFrom(snapshot);
  ASSERT_FALSE(why) << *why;
  EXPECT_EQ(restored.Template("T/a")->learned_runs(), 2u);
  // The journal came back without a base state: a late label for it still applies.
  v1::SetLabel l;
  l.set_histogram("T/a");
  l.set_run(2);
  l.set_label(v1::LABEL_BAD);
  ASSERT_FALSE(restored.SetLabel(l, Actor{}).refused);
  ASSERT_TRUE(slot && slot->relearned);
  ASSERT_EQ(slot->relearned->size(), 1u);
  EXPECT_EQ(slot->relearned->front().run, 1);
  EXPECT_EQ(restored.Template("T/a")->learned_runs(), 1u);
  slow_.Open();
}

}  // namespace
}  // namespace dinamo::daemon
