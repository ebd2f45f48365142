#include "dinamo/observation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace dinamo {
namespace {

TEST(Normalise, ContentsSumToOneWithPoissonVariance) {
  const std::vector<double> counts = {1, 3, 0, 6};

  const Observation obs = Normalise(counts);

  EXPECT_DOUBLE_EQ(obs.integral, 10.0);
  EXPECT_DOUBLE_EQ(obs.x[1], 0.3);
  EXPECT_DOUBLE_EQ(obs.var_x[1], (0.3 - 0.09) / 10.0);
}

TEST(Normalise, EmptyBinGetsOneOverIntegralUncertainty) {
  const std::vector<double> counts = {0, 4};

  const Observation obs = Normalise(counts);

  EXPECT_DOUBLE_EQ(obs.x[0], 0.0);
  EXPECT_DOUBLE_EQ(std::sqrt(obs.var_x[0]), 0.25);
}

TEST(Normalise, EmptyHistogramKeepsRawContentsAndNoUncertainty) {
  const std::vector<double> counts = {0, 0, 0};

  const Observation obs = Normalise(counts);

  EXPECT_TRUE(obs.empty());
  EXPECT_EQ(obs.x, counts);
  EXPECT_EQ(obs.var_x, std::vector<double>(3, 0.0));
}

TEST(CheckCounts, RefusesNanNamingTheBin) {
  const std::vector<double> counts = {1, std::numeric_limits<double>::quiet_NaN()};

  EXPECT_EQ(CheckCounts(counts).value_or(""), "count of bin 1 is NaN");
}

TEST(CheckCounts, RefusesInfiniteAndNegativeCounts) {
  const std::vector<double> inf = {std::numeric_limits<double>::infinity()};
  const std::vector<double> negative = {2, -1};

  EXPECT_EQ(CheckCounts(inf).value_or(""), "count of bin 0 is infinite");
  EXPECT_EQ(CheckCounts(negative).value_or(""), "count of bin 1 is negative");
}

TEST(CheckCounts, AcceptsZerosAndRefusesNoBins) {
  EXPECT_FALSE(CheckCounts(std::vector<double>{0, 0}).has_value());
  EXPECT_TRUE(CheckCounts(std::vector<double>{}).has_value());
}

}  // namespace
}  // namespace dinamo
