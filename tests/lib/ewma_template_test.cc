#include "dinamo/ewma_template.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "dinamo/replay.h"
#include "dinamo/template_model.h"

namespace dinamo {
namespace {

Expectation ExpectationFor(const EwmaState& s) {
  Expectation e;
  ExpectationOf(s, e);
  return e;
}

Score ScoreOf(const EwmaState& s, const Observation& obs) {
  std::vector<double> pulls(obs.bins());
  return ScoreEwma(s, obs, pulls);
}

TEST(EwmaTemplate, StartsUniformWithHundredEntriesPerBin) {
  const EwmaState s = InitialEwmaState(4, 0.5);

  const Expectation e = ExpectationFor(s);

  EXPECT_DOUBLE_EQ(s.integral, 400.0);
  EXPECT_DOUBLE_EQ(e.mu[2], 0.25);
  EXPECT_NEAR(e.sigma_mu[2], std::sqrt((0.25 - 0.0625) / 400.0), 1e-15);
}

TEST(EwmaTemplate, FusedScoreEqualsScoreAgainstExpectation) {
  EwmaState s = InitialEwmaState(5, 0.3);
  LearnEwma(s, Normalise(std::vector<double>{5, 9, 20, 9, 4}));
  const Observation obs = Normalise(std::vector<double>{3, 12, 18, 7, 0});
  std::vector<double> fused(5), plain(5);

  const Score a = ScoreEwma(s, obs, fused);
  const Score b = ScoreObservation(obs, ExpectationFor(s), plain);

  EXPECT_NEAR(a.chi2, b.chi2, 1e-12 * b.chi2);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_NEAR(fused[i], plain[i], 1e-12);
}

TEST(EwmaTemplate, AlphaZeroMakesTemplateTheLastGoodRun) {
  EwmaState s = InitialEwmaState(3, 0.0);
  const Observation run = Normalise(std::vector<double>{10, 30, 60});

  LearnEwma(s, run);

  const Expectation e = ExpectationFor(s);
  for (std::size_t b = 0; b < 3; ++b) EXPECT_NEAR(e.mu[b], run.x[b], 1e-15);
  EXPECT_DOUBLE_EQ(s.integral, 100.0);
}

TEST(EwmaTemplate, AlphaOneNeverMovesFromUniformStart) {
  EwmaState s = InitialEwmaState(4, 1.0);
  const Observation run = Normalise(std::vector<double>{1, 2, 3, 90});

  LearnEwma(s, run);
  const Expectation e = ExpectationFor(s);
  const Score score = ScoreOf(s, run);

  for (double mu : e.mu) EXPECT_DOUBLE_EQ(mu, 0.25);
  EXPECT_TRUE(std::isfinite(score.chi2));
  EXPECT_GT(score.chi2, 0.0);
}

TEST(EwmaTemplate, EmptyHistogramIsScoredButNeverTeaches) {
  EwmaState s = InitialEwmaState(3, 0.5);
  const EwmaState before = s;
  const Observation empty = Normalise(std::vector<double>{0, 0, 0});

  const Score score = ScoreOf(s, empty);
  const bool learned = LearnEwma(s, empty);

  EXPECT_TRUE(std::isfinite(score.chi2));
  EXPECT_FALSE(learned);
  EXPECT_EQ(s, before);
}

TEST(EwmaTemplate, OneBinHistogramHasNoShapeAndScoresZero) {
  EwmaState s = InitialEwmaState(1, 0.5);
  const Observation run = Normalise(std::vector<double>{42});

  const Score first = ScoreOf(s, run);
  LearnEwma(s, run);
  const Score second = ScoreOf(s, run);

  EXPECT_NEAR(first.chi2, 0.0, 1e-6);
  EXPECT_NEAR(second.chi2, 0.0, 1e-6);
  EXPECT_FALSE(second.Anomalous(-3.25));
}

TEST(EwmaTemplate, AllEntriesInOneBinGiveFinitePullsAndLearnFinitely) {
  EwmaState s = InitialEwmaState(4, 0.5);
  const Observation spike = Normalise(std::vector<double>{0, 500, 0, 0});

  const Score score = ScoreOf(s, spike);
  LearnEwma(s, spike);

  EXPECT_TRUE(std::isfinite(score.chi2));
  for (double w : s.weight) EXPECT_TRUE(std::isfinite(w));
  EXPECT_GT(ExpectationFor(s).mu[1], 0.25);
}

TEST(EwmaTemplate, DeadBinsStandOutInThePulls) {
  EwmaState s = InitialEwmaState(6, 0.5);
  const std::vector<double> healthy = {1000, 1000, 1000, 1000, 1000, 1000};
  for (int i = 0; i < 10; ++i) LearnEwma(s, Normalise(healthy));
  std::vector<double> dead = healthy;
  dead[2] = 0;
  std::vector<double> pulls(6);

  const Score score = ScoreEwma(s, Normalise(dead), pulls);

  EXPECT_TRUE(score.Anomalous(1.0));
  for (std::size_t b = 0; b < 6; ++b) {
    if (b != 2) {
      EXPECT_LT(std::abs(pulls[b]), std::abs(pulls[2]));
    }
  }
  EXPECT_LT(pulls[2], 0.0);
}

TEST(EwmaTemplate, TwoDimensionalHistogramIsScoredPerBinRowMajor) {
  // A 2x3 histogram flattened row-major is, for the method, six bins.
  const std::vector<double> grid = {4, 8, 4, 8, 16, 8};
  EwmaState flat = InitialEwmaState(6, 0.5);
  LearnEwma(flat, Normalise(grid));
  std::vector<double> transposed_grid = {4, 8, 8, 16, 4, 8};
  std::vector<double> pulls(6);

  const Score same = ScoreEwma(flat, Normalise(grid), pulls);
  const Score moved = ScoreEwma(flat, Normalise(transposed_grid), pulls);

  EXPECT_LT(same.chi2, moved.chi2);
  EXPECT_GT(pulls[2], 0.0);  // bin (0, 2) holds more than the template expects
}

TEST(EwmaTemplate, BadRunIsScoredButDoesNotTeach) {
  RunTable table;
  table.runs.push_back({0, Label::kGood, {10, 20, 30}});
  table.runs.push_back({1, Label::kBad, {90, 5, 5}});
  table.runs.push_back({2, Label::kUnknown, {80, 10, 10}});
  EwmaModel model(3, 0.5);

  Replay(table, model, {});

  EwmaState only_good = InitialEwmaState(3, 0.5);
  LearnEwma(only_good, Normalise(table.runs[0].counts));
  EXPECT_EQ(model.state(), only_good);
}

TEST(EwmaTemplate, LearningCountsRunsAndMovesIntegral) {
  EwmaState s = InitialEwmaState(2, 0.5);

  LearnEwma(s, Normalise(std::vector<double>{500, 500}));

  EXPECT_EQ(s.learned_runs, 1u);
  EXPECT_DOUBLE_EQ(s.integral, 0.5 * 200 + 0.5 * 1000);
}

}  // namespace
}  // namespace dinamo
