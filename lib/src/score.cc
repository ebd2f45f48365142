#include "dinamo/score.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "hot_path.h"

namespace dinamo {

namespace {

// Up to this many largest pulls are found by repeated maximum searches (two vectorised passes
// over the bins each, no data-dependent branch per bin); more by a partial sort.
constexpr std::size_t kSearchedPulls = 8;

// |pull| with NaN as -1, so that it ranks below every number; a bin already taken is -inf.
double Magnitude(double pull) {
  const double m = std::abs(pull);
  return m == m ? m : -1.0;
}

}  // namespace

DINAMO_HOT_PATH std::size_t LargestPulls(std::span<const double> pulls,
                                         std::span<std::uint32_t> top) {
  const std::size_t bins = pulls.size();
  const std::size_t n = std::min(top.size(), bins);
  if (n == 0) {
    return 0;
  }
  thread_local std::vector<double> magnitude_buffer;  // reused: nothing allocated per call
  magnitude_buffer.resize(bins);
  double* magnitude = magnitude_buffer.data();
#pragma omp simd
  for (std::size_t b = 0; b < bins; ++b) {
    magnitude[b] = Magnitude(pulls[b]);
  }

  if (n > kSearchedPulls) {
    thread_local std::vector<std::uint32_t> order;
    order.resize(bins);
    std::iota(order.begin(), order.end(), 0U);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                      [magnitude](std::uint32_t a, std::uint32_t b) {
                        return magnitude[a] > magnitude[b] ||
                               (magnitude[a] == magnitude[b] && a < b);
                      });
    std::copy_n(order.begin(), n, top.begin());
    return n;
  }

  // The first bin holding the maximum is the lowest among equals.
  constexpr double kTaken = -std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < n; ++i) {
    double largest = kTaken;
#pragma omp simd reduction(max : largest)
    for (std::size_t b = 0; b < bins; ++b) {
      largest = magnitude[b] > largest ? magnitude[b] : largest;
    }
    const double* at = std::find(magnitude, magnitude + bins, largest);
    top[i] = static_cast<std::uint32_t>(at - magnitude);
    magnitude[at - magnitude] = kTaken;
  }
  return n;
}

double LogReducedChi2(double chi2, std::size_t bins) {
  return std::log(chi2 / static_cast<double>(bins));
}

Score ScoreObservation(const Observation& obs, const Expectation& expected,
                       std::span<double> pulls) {
  const std::size_t bins = obs.bins();
  assert(expected.bins() == bins && pulls.size() == bins);

  double chi2 = 0.0;
  for (std::size_t b = 0; b < bins; ++b) {
    const double s = expected.sigma_mu[b];
    const double var = std::max(obs.var_x[b] + s * s, kMinVariance);
    const double pull = (obs.x[b] - expected.mu[b]) / std::sqrt(var);
    pulls[b] = pull;
    chi2 += pull * pull;
  }
  return {chi2, LogReducedChi2(chi2, bins)};
}

namespace {

// Binomial-like variance of a template bin treated as if it had been measured with I_mu
// entries; an empty bin gets the same "less than one entry" floor as an observation.
double TemplatePoissonVariance(double mu, double integral) {
  if (mu == 0.0) return 1.0 / (integral * integral);
  return (mu - mu * mu) / integral;
}

}  // namespace

Score ScoreDebiased(const Observation& obs, const Expectation& expected,
                    const Debiasing& debiasing, std::span<double> pulls) {
  const std::size_t bins = obs.bins();
  assert(expected.bins() == bins && pulls.size() == bins);
  assert(debiasing.resamples > 0);

  // Without a template integral (a method that has none) there is nothing to debias against.
  if (expected.integral <= kEmptyIntegral) return ScoreObservation(obs, expected, pulls);

  std::mt19937_64 rng(debiasing.seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const double inv_r = 1.0 / debiasing.resamples;

  // The template has at least the run's statistics: smear the template to the run's level.
  // Otherwise the run is the better measured one: smear the run to the template's level.
  const bool smear_template = expected.integral >= obs.integral;

  double chi2 = 0.0;
  for (std::size_t b = 0; b < bins; ++b) {
    const double x = obs.x[b];
    const double mu = expected.mu[b];
    const double var_mu = expected.sigma_mu[b] * expected.sigma_mu[b];
    const double var_x = obs.var_x[b];

    double spread, denominator;
    if (smear_template) {
      spread = std::sqrt(var_mu + var_x);
      denominator = 2.0 * var_x + var_mu;
    } else {
      const double var_p = TemplatePoissonVariance(mu, expected.integral);
      spread = std::sqrt(var_mu + var_p);
      denominator = var_x + var_mu + var_p;
    }
    const double inv_sd = 1.0 / std::sqrt(std::max(denominator, kMinVariance));

    double sum_pull = 0.0, sum_sq = 0.0;
    for (int r = 0; r < debiasing.resamples; ++r) {
      const double draw = normal(rng) * spread;
      const double pull = smear_template ? (x - (mu + draw)) * inv_sd : (x + draw - mu) * inv_sd;
      sum_pull += pull;
      sum_sq += pull * pull;
    }
    pulls[b] = sum_pull * inv_r;
    chi2 += sum_sq * inv_r;
  }
  return {chi2, LogReducedChi2(chi2, bins)};
}

}  // namespace dinamo
