#include "dinamo/score.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <random>

namespace dinamo {

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
