#include "dinamo/score.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "dinamo/ewma_template.h"

namespace dinamo {
namespace {

Observation MakeObservation(std::vector<double> x, std::vector<double> var_x, double integral) {
  Observation obs;
  obs.x = std::move(x);
  obs.var_x = std::move(var_x);
  obs.integral = integral;
  return obs;
}

Expectation MakeExpectation(std::vector<double> mu, std::vector<double> sigma, double integral) {
  Expectation e;
  e.mu = std::move(mu);
  e.sigma_mu = std::move(sigma);
  e.integral = integral;
  return e;
}

TEST(ScoreObservation, PullIsResidualOverCombinedUncertainty) {
  const Observation obs = MakeObservation({0.5, 0.5}, {0.0009, 0.0016}, 100);
  const Expectation e = MakeExpectation({0.4, 0.6}, {0.04, 0.03}, 1000);
  std::vector<double> pulls(2);

  const Score s = ScoreObservation(obs, e, pulls);

  EXPECT_NEAR(pulls[0], 0.1 / 0.05, 1e-12);
  EXPECT_NEAR(pulls[1], -0.1 / 0.05, 1e-12);
  EXPECT_NEAR(s.chi2, 8.0, 1e-12);
  EXPECT_NEAR(s.log_reduced_chi2, std::log(4.0), 1e-12);
}

TEST(ScoreObservation, PerfectMatchWithoutUncertaintyScoresZero) {
  const Observation obs = MakeObservation({1.0}, {0.0}, 10);
  const Expectation e = MakeExpectation({1.0}, {0.0}, 10);
  std::vector<double> pulls(1);

  const Score s = ScoreObservation(obs, e, pulls);

  EXPECT_EQ(s.chi2, 0.0);
  EXPECT_EQ(s.log_reduced_chi2, -INFINITY);
  EXPECT_FALSE(s.Anomalous(-3.25));
}

// The mean of the debiased chi2 over many resamples converges to its expectation value:
// E[(x - mu')^2] = (x - mu)^2 + var_mu + var_x over the branch's denominator.
TEST(ScoreDebiased, RunWithFewerEntriesThanTemplateSmearsTheTemplate) {
  const Observation obs = MakeObservation({0.3, 0.7}, {0.002, 0.003}, 100);
  const Expectation e = MakeExpectation({0.35, 0.65}, {0.01, 0.02}, 5000);
  std::vector<double> pulls(2);

  const Score s = ScoreDebiased(obs, e, {200000, 7}, pulls);

  double expected = 0.0;
  for (int b = 0; b < 2; ++b) {
    const double d = obs.x[b] - e.mu[b], vm = e.sigma_mu[b] * e.sigma_mu[b];
    expected += (d * d + vm + obs.var_x[b]) / (2 * obs.var_x[b] + vm);
  }
  EXPECT_NEAR(s.chi2, expected, 0.01 * expected);
}

TEST(ScoreDebiased, RunWithMoreEntriesThanTemplateSmearsTheRun) {
  const Observation obs = MakeObservation({0.3, 0.7}, {0.0001, 0.0002}, 50000);
  const Expectation e = MakeExpectation({0.35, 0.65}, {0.01, 0.02}, 500);
  std::vector<double> pulls(2);

  const Score s = ScoreDebiased(obs, e, {200000, 7}, pulls);

  double expected = 0.0;
  for (int b = 0; b < 2; ++b) {
    const double d = obs.x[b] - e.mu[b], vm = e.sigma_mu[b] * e.sigma_mu[b];
    const double vp = (e.mu[b] - e.mu[b] * e.mu[b]) / e.integral;
    expected += (d * d + vm + vp) / (obs.var_x[b] + vm + vp);
  }
  EXPECT_NEAR(s.chi2, expected, 0.01 * expected);
  EXPECT_NEAR(pulls[0], -0.05 / std::sqrt(0.0001 + 0.0001 + (0.35 - 0.35 * 0.35) / 500), 0.01);
}

TEST(ScoreDebiased, SameSeedGivesSameScoreAndOtherSeedDiffers) {
  const Observation obs = MakeObservation({0.3, 0.7}, {0.002, 0.003}, 100);
  const Expectation e = MakeExpectation({0.35, 0.65}, {0.01, 0.02}, 5000);
  std::vector<double> pulls(2);

  const double a = ScoreDebiased(obs, e, {50, 1}, pulls).chi2;
  const double b = ScoreDebiased(obs, e, {50, 1}, pulls).chi2;
  const double c = ScoreDebiased(obs, e, {50, 2}, pulls).chi2;

  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(ScoreDebiased, WithoutTemplateIntegralFallsBackToPlainScore) {
  const Observation obs = MakeObservation({0.3, 0.7}, {0.002, 0.003}, 100);
  const Expectation e = MakeExpectation({0.35, 0.65}, {0.01, 0.02}, 0.0);
  std::vector<double> pulls(2);

  const double debiased = ScoreDebiased(obs, e, {50, 1}, pulls).chi2;
  const double plain = ScoreObservation(obs, e, pulls).chi2;

  EXPECT_EQ(debiased, plain);
}

}  // namespace
}  // namespace dinamo

namespace {

// The definition LargestPulls must agree with: every bin ranked by |pull| (NaN last), the
// lower bin first among equals.
std::vector<std::uint32_t> LargestPullsByFullSort(const std::vector<double>& pulls,
                                                  std::size_t n) {
  std::vector<std::uint32_t> bins(pulls.size());
  std::iota(bins.begin(), bins.end(), 0U);
  auto magnitude = [&](std::uint32_t b) {
    return std::isnan(pulls[b]) ? -1.0 : std::abs(pulls[b]);
  };
  std::stable_sort(bins.begin(), bins.end(), [&](std::uint32_t a, std::uint32_t b) {
    return magnitude(a) > magnitude(b);
  });
  bins.resize(std::min(n, bins.size()));
  return bins;
}

std::vector<std::uint32_t> Largest(const std::vector<double>& pulls, std::size_t n) {
  std::vector<std::uint32_t> top(n, 999999U);
  top.resize(dinamo::LargestPulls(pulls, top));
  return top;
}

}  // namespace

TEST(LargestPulls, AgreeWithAFullSortOnRandomShapedAndTiedPulls) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> gauss(0.0, 2.0);
  std::uniform_int_distribution<int> coarse(-3, 3);
  for (int trial = 0; trial < 2000; ++trial) {
    const std::size_t bins = 1 + trial % 203;
    std::vector<double> pulls(bins);
    for (std::size_t b = 0; b < bins; ++b) {
      switch (trial % 5) {
        case 0: pulls[b] = gauss(rng); break;
        case 1: pulls[b] = static_cast<double>(coarse(rng)); break;  // many ties
        case 2: pulls[b] = static_cast<double>(b); break;            // rising
        case 3: pulls[b] = -static_cast<double>(bins - b); break;    // falling, negative
        default: pulls[b] = std::sin(0.1 * static_cast<double>(b)) * 10.0; break;
      }
    }
    if (trial % 7 == 0) pulls[trial % bins] = std::nan("");
    if (trial % 11 == 0) pulls[(trial / 11) % bins] = -std::numeric_limits<double>::infinity();
    for (std::size_t n : {1, 5, 9, 70}) {
      ASSERT_EQ(Largest(pulls, n), LargestPullsByFullSort(pulls, n))
          << "trial " << trial << " bins " << bins << " n " << n;
    }
  }
}

TEST(LargestPulls, AllNanAndEmptyInputs) {
  EXPECT_TRUE(Largest({}, 5).empty());
  const std::vector<double> nans(4, std::nan(""));
  EXPECT_EQ(Largest(nans, 5), (std::vector<std::uint32_t>{0, 1, 2, 3}));
  EXPECT_EQ(Largest({1.0, -4.0, 2.0}, 0), std::vector<std::uint32_t>{});
}
