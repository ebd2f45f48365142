#include <cmath>
#include <numeric>
#include <sstream>
#include <vector>

#include <gtest/gtest.h>

#include "dinamo/transformer_template.h"
#include "support/transformer_runs.h"

namespace dinamo {
namespace {

using testing::kBins;
using testing::RunObservation;
using testing::SmallOptions;

void RecordRuns(TransformerModel& model, std::initializer_list<std::int64_t> runs) {
  for (std::int64_t run : runs) {
    ASSERT_TRUE(model.Record(run, RunObservation(run)));
  }
}

// The context row `row` holds the contents of run `run`.
void ExpectRow(const RunContext& c, std::size_t row, std::int64_t run) {
  const Observation obs = RunObservation(run);
  for (std::size_t b = 0; b < kBins; ++b) {
    EXPECT_EQ(c.contents[row * kBins + b], static_cast<float>(obs.x[b])) << "row " << row;
  }
}

void ExpectPadding(const RunContext& c, std::size_t rows) {
  for (std::size_t row = 0; row < rows; ++row) {
    EXPECT_EQ(c.times[row], kPadTime) << "row " << row;
    for (std::size_t b = 0; b < kBins; ++b) {
      EXPECT_EQ(c.contents[row * kBins + b], kPadContent) << "row " << row;
    }
  }
}

Score ScoreOf(const TransformerModel& model, std::int64_t run) {
  std::vector<double> pulls(kBins);
  return model.ScoreRun(run, RunObservation(run), pulls);
}

TEST(TransformerContext, HoldsTheMostRecentRunsOldestFirstWithRelativeTimes) {
  TransformerModel model(SmallOptions());
  for (std::int64_t run = 1; run <= 30; ++run) {
    RecordRuns(model, {run * 2});
  }
  // t = 51: the 20 most recent good runs before it are 12, 14, ..., 50.
  const RunContext c = model.ContextFor(51);
  ASSERT_EQ(c.times.size(), 20U);
  for (std::size_t row = 0; row < 20; ++row) {
    const auto run = static_cast<std::int64_t>(12 + 2 * row);
    EXPECT_EQ(c.times[row], static_cast<float>(run - 51));
    ExpectRow(c, row, run);
  }
}

TEST(TransformerContext, PadsMissingRunsAtTheFront) {
  TransformerModel model(SmallOptions());
  RecordRuns(model, {3, 7});
  const RunContext c = model.ContextFor(10);
  ExpectPadding(c, 18);
  EXPECT_EQ(c.times[18], -7.0F);
  EXPECT_EQ(c.times[19], -3.0F);
  ExpectRow(c, 18, 3);
  ExpectRow(c, 19, 7);
}

TEST(TransformerContext, ExcludesTheRunItselfAndLaterRuns) {
  TransformerModel model(SmallOptions());
  RecordRuns(model, {1, 2, 3, 4, 5});
  const RunContext c = model.ContextFor(3);
  ExpectPadding(c, 18);
  EXPECT_EQ(c.times[18], -2.0F);
  EXPECT_EQ(c.times[19], -1.0F);
  ExpectRow(c, 18, 1);
  ExpectRow(c, 19, 2);
}

TEST(TransformerContext, IsAllPaddingWithoutEarlierRuns) {
  TransformerModel model(SmallOptions());
  RecordRuns(model, {5, 6});
  ExpectPadding(model.ContextFor(5), 20);
}

TEST(TransformerModel, RefusesEmptyOtherBinningAndOutOfOrderRuns) {
  TransformerModel model(SmallOptions());
  EXPECT_FALSE(model.Record(1, Normalise(std::vector<double>(kBins, 0.0))));
  EXPECT_FALSE(model.Record(1, Normalise(std::vector<double>(kBins + 1, 5.0))));
  EXPECT_TRUE(model.Record(4, RunObservation(4)));
  EXPECT_FALSE(model.Record(4, RunObservation(4)));
  EXPECT_FALSE(model.Record(3, RunObservation(3)));
  EXPECT_EQ(model.learned_runs(), 1U);
}

TEST(TransformerModel, TemplateSumsToOneWithPositiveUncertainty) {
  TransformerModel model(SmallOptions());
  RecordRuns(model, {1, 2, 3});
  model.Train();
  Expectation e;
  model.Expect(4, e);
  ASSERT_EQ(e.bins(), kBins);
  EXPECT_NEAR(std::accumulate(e.mu.begin(), e.mu.end(), 0.0), 1.0, 1e-5);
  for (std::size_t b = 0; b < kBins; ++b) {
    EXPECT_GT(e.mu[b], 0.0);
    EXPECT_GT(e.sigma_mu[b], 0.0);
  }
  EXPECT_EQ(e.integral, 0.0);
}

TEST(TransformerModel, TrainingStepsReduceTheLossOnAFixedBatch) {
  TransformerModel model(SmallOptions());
  RecordRuns(model, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  const double before = model.BatchLoss();
  for (int i = 0; i < 10; ++i) {
    model.TrainStep();
  }
  EXPECT_LT(model.BatchLoss(), before);
}

TEST(TransformerModel, TrainStopsAtTheStepLimit) {
  TransformerOptions o = SmallOptions();
  o.max_steps = 3;
  TransformerModel model(o);
  RecordRuns(model, {1, 2});
  EXPECT_EQ(model.Train().last_steps, 3);
  EXPECT_EQ(model.Train().total_steps, 6U);
  EXPECT_EQ(model.stats().trainings, 2U);
}

TEST(EarlyStopping, StopsAfterFiveStepsWithoutImprovement) {
  EarlyStopping stopping(5, 1000);
  // Improves at steps 1, 2, 3; steps 4 to 8 are not lower than 3 (equal does not count).
  const std::vector<double> losses = {5.0, 4.0, 3.0, 3.5, 3.0, 4.0, 5.0, 6.0};
  for (std::size_t i = 0; i + 1 < losses.size(); ++i) {
    EXPECT_TRUE(stopping.Continue(losses[i])) << "step " << i + 1;
  }
  EXPECT_FALSE(stopping.Continue(losses.back()));
  EXPECT_EQ(stopping.steps(), 8);
  EXPECT_EQ(stopping.best(), 3.0);
}

TEST(EarlyStopping, AnImprovementRestartsThePatience) {
  EarlyStopping stopping(5, 1000);
  for (double loss : {2.0, 3.0, 3.0, 3.0, 3.0, 1.0, 3.0, 3.0, 3.0, 3.0}) {
    EXPECT_TRUE(stopping.Continue(loss));
  }
  EXPECT_FALSE(stopping.Continue(3.0));
  EXPECT_EQ(stopping.steps(), 11);
  EXPECT_EQ(stopping.best(), 1.0);
}

TEST(EarlyStopping, StopsAtTheStepLimitWhileImproving) {
  EarlyStopping stopping(5, 4);
  EXPECT_TRUE(stopping.Continue(4.0));
  EXPECT_TRUE(stopping.Continue(3.0));
  EXPECT_TRUE(stopping.Continue(2.0));
  EXPECT_FALSE(stopping.Continue(1.0));
}

TEST(GaussianNll, MatchesHandComputedValues) {
  // 0.5 * (ln 0.01 + 0.05^2 / 0.01) and 0.5 * (ln 0.04 + 0.1^2 / 0.04), averaged.
  const std::vector<double> x = {0.1, 0.2}, mu = {0.15, 0.1}, var = {0.01, 0.04};
  EXPECT_NEAR(GaussianNll(x, mu, var, 1e-9), -1.8310115027140728, 1e-12);
}

TEST(GaussianNll, FloorsTheVariance) {
  // Both variances are raised to 1e-9: 0.5 * (ln 1e-9 + 0.1^2 / 1e-9) and 0.5 * ln 1e-9.
  const std::vector<double> x = {0.2, 0.3}, mu = {0.1, 0.3}, var = {0.0, 1e-12};
  EXPECT_NEAR(GaussianNll(x, mu, var, 1e-9), 2499989.638367082, 1e-6);
}

TEST(TransformerModel, SameSeedGivesTheSameTemplateAndTraining) {
  TransformerModel a(SmallOptions()), b(SmallOptions());
  RecordRuns(a, {1, 2, 3});
  RecordRuns(b, {1, 2, 3});
  a.Train();
  b.Train();
  Expectation ea, eb;
  a.Expect(4, ea);
  b.Expect(4, eb);
  EXPECT_EQ(ea.mu, eb.mu);
  EXPECT_EQ(ea.sigma_mu, eb.sigma_mu);
}

TEST(TransformerModel, OtherSeedGivesAnotherTemplate) {
  TransformerOptions o = SmallOptions();
  TransformerModel a(o);
  o.seed = 23;
  TransformerModel b(o);
  Expectation ea, eb;
  a.Expect(1, ea);
  b.Expect(1, eb);
  EXPECT_NE(ea.mu, eb.mu);
}

TEST(TransformerModel, SnapshotRoundTripScoresAndTrainsIdentically) {
  TransformerModel original(SmallOptions());
  RecordRuns(original, {1, 2, 3, 4});
  original.Train();
  std::stringstream snapshot;
  original.Save(snapshot);

  TransformerOptions other = SmallOptions();
  other.seed = 5;  // the snapshot, not the seed, decides
  TransformerModel restored(other);
  restored.Load(snapshot);
  EXPECT_EQ(restored.learned_runs(), original.learned_runs());
  EXPECT_EQ(ScoreOf(restored, 5).chi2, ScoreOf(original, 5).chi2);

  // Optimiser state and dropout stream came along: the next training is the same too.
  ASSERT_TRUE(original.Learn(5, RunObservation(5)));
  ASSERT_TRUE(restored.Learn(5, RunObservation(5)));
  EXPECT_EQ(restored.stats().last_steps, original.stats().last_steps);
  EXPECT_EQ(ScoreOf(restored, 6).chi2, ScoreOf(original, 6).chi2);
}

TEST(TransformerModel, CloneContinuesIdentically) {
  TransformerModel original(SmallOptions());
  RecordRuns(original, {1, 2, 3});
  original.Train();
  const auto clone = original.CloneTransformer();
  ASSERT_TRUE(original.Learn(4, RunObservation(4)));
  ASSERT_TRUE(clone->Learn(4, RunObservation(4)));
  EXPECT_EQ(clone->method(), "transformer");
  EXPECT_EQ(ScoreOf(*clone, 5).chi2, ScoreOf(original, 5).chi2);
}

TEST(TransformerModel, LoadRefusesABadSnapshotAndKeepsItsState) {
  TransformerModel model(SmallOptions());
  RecordRuns(model, {1, 2});
  const double before = ScoreOf(model, 3).chi2;

  std::stringstream garbage("not a snapshot");
  EXPECT_THROW(model.Load(garbage), std::runtime_error);

  TransformerOptions wider = SmallOptions();
  wider.bins = kBins + 2;
  std::stringstream other;
  TransformerModel(wider).Save(other);
  EXPECT_THROW(model.Load(other), std::runtime_error);

  EXPECT_EQ(ScoreOf(model, 3).chi2, before);
  EXPECT_EQ(model.learned_runs(), 2U);
}

}  // namespace
}  // namespace dinamo
