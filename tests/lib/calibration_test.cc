#include "dinamo/calibration.h"

#include <gtest/gtest.h>

#include <vector>

#include "dinamo/replay.h"
#include "dinamo/run_table.h"
#include "support/golden.h"

namespace dinamo {
namespace {

const Label G = Label::kGood, B = Label::kBad, U = Label::kUnknown;

TEST(Evaluate, CountsConfusionOfFlaggedRunsAndSkipsUnknownLabels) {
  const std::vector<double> s = {2.0, 0.5, 3.0, -1.0, 5.0};
  const std::vector<Label> labels = {B, B, G, G, U};

  const Metrics m = Evaluate(s, labels, 1.0);

  EXPECT_EQ(m.runs, 4u);
  EXPECT_DOUBLE_EQ(m.sensitivity, 0.5);
  EXPECT_DOUBLE_EQ(m.specificity, 0.5);
  EXPECT_DOUBLE_EQ(m.precision, 0.5);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.5);
  EXPECT_DOUBLE_EQ(m.balanced_accuracy, 0.5);
}

TEST(RocAuc, PerfectSeparationIsOneAndTiesCountHalf) {
  EXPECT_DOUBLE_EQ(RocAuc(std::vector<double>{1, 2, 3, 4}, std::vector<Label>{G, G, B, B}), 1.0);
  EXPECT_DOUBLE_EQ(RocAuc(std::vector<double>{1, 1}, std::vector<Label>{G, B}), 0.5);
  EXPECT_DOUBLE_EQ(RocAuc(std::vector<double>{3, 1, 2}, std::vector<Label>{G, B, G}), 0.0);
}

TEST(ThresholdGrid, ThousandPointsFromMinusThreeQuarterToSevenHalf) {
  const auto grid = ThresholdGrid();

  ASSERT_EQ(grid.size(), 1000u);
  EXPECT_EQ(grid.front(), -3.25);
  EXPECT_EQ(grid.back(), 7.5);
  EXPECT_DOUBLE_EQ(grid[397], 1.0220220220220222);
}

TEST(ChooseAlpha, FindsTheMaximumOfASmoothCurveBeyondTheCoarseGrid) {
  const auto choice = ChooseAlpha([](double a) { return -(a - 0.4237) * (a - 0.4237); });

  EXPECT_NEAR(choice.alpha, 0.4237, 0.00025 + 1e-12);
}

class CalibrationOnToyData : public ::testing::Test {
 protected:
  void SetUp() override {
    table_ = ReadRunTable(testing::DataPath("toy_0.csv"));
    s_ = ReplayEwmaScores(table_, 0.5, kRuns);
    for (std::size_t i = 0; i < kRuns; ++i) labels_.push_back(table_.runs[i].label);
  }

  static constexpr std::size_t kRuns = 1000;
  RunTable table_;
  std::vector<double> s_;
  std::vector<Label> labels_;
};

TEST_F(CalibrationOnToyData, ThresholdChoiceIsDeterministic) {
  EXPECT_EQ(ChooseThreshold(s_, labels_), ChooseThreshold(s_, labels_));
}

TEST_F(CalibrationOnToyData, BootstrapThresholdIsWithinHundredthOfBruteForceBest) {
  double best = 0.0;
  auto accuracy = [&](double t) { return Evaluate(s_, labels_, t).balanced_accuracy; };
  for (double t : ThresholdGrid()) best = std::max(best, accuracy(t));
  for (double t : s_) best = std::max(best, accuracy(t));

  const double chosen = ChooseThreshold(s_, labels_);

  EXPECT_GE(Evaluate(s_, labels_, chosen).balanced_accuracy, best - 0.01);
}

TEST_F(CalibrationOnToyData, AlphaChoiceIsDeterministicAndNearReference) {
  auto auc = [&](double alpha) { return RocAuc(ReplayEwmaScores(table_, alpha, kRuns), labels_); };

  const AlphaChoice a = ChooseAlpha(auc);
  const AlphaChoice b = ChooseAlpha(auc);

  EXPECT_EQ(a.alpha, b.alpha);
  EXPECT_GT(a.auc, auc(0.1));
  EXPECT_NEAR(a.alpha, 0.53, 0.1);  // the reference's random search chose 0.532
}

}  // namespace
}  // namespace dinamo
