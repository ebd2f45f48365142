#include "dinamo/ewma_template.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "hot_path.h"

namespace dinamo {

namespace {

// Keeps the weight of a perfectly measured bin finite.
constexpr double kWeightFloor = 1e-9;

// The starting template claims the precision of a histogram with 100 entries per bin.
constexpr double kInitialEntriesPerBin = 100.0;

}  // namespace

EwmaState InitialEwmaState(std::size_t bins, double alpha) {
  EwmaState s;
  s.alpha = alpha;
  s.integral = kInitialEntriesPerBin * static_cast<double>(bins);
  s.weight.resize(bins);
  s.sum_mu.resize(bins);
  s.sum_sigma.resize(bins);

  const double mu0 = 1.0 / static_cast<double>(bins);
  const double var0 = (mu0 - mu0 * mu0) / s.integral;
  const double w0 = (1.0 - alpha) / (var0 + kWeightFloor);
  for (std::size_t b = 0; b < bins; ++b) {
    s.weight[b] = w0;
    s.sum_mu[b] = w0 * mu0;
    s.sum_sigma[b] = w0 * var0;
  }
  return s;
}

namespace {

// With zero weight (alpha = 1) the template never moved from the uniform start.
void UniformStart(const EwmaState& state, double& mu, double& var) {
  const double bins = static_cast<double>(state.bins());
  const double integral = kInitialEntriesPerBin * bins;
  mu = 1.0 / bins;
  var = (mu - mu * mu) / integral;
}

}  // namespace

namespace {

void ExpectBin(const EwmaState& state, std::size_t b, double& mu, double& sigma_mu) {
  const double w = state.weight[b];
  if (w > 0.0) {
    mu = state.sum_mu[b] / w;
    sigma_mu = std::sqrt(state.sum_sigma[b] / w);
  } else {
    double var;
    UniformStart(state, mu, var);
    sigma_mu = std::sqrt(var);
  }
}

}  // namespace

void ExpectationOf(const EwmaState& state, Expectation& out) {
  const std::size_t bins = state.bins();
  out.mu.resize(bins);
  out.sigma_mu.resize(bins);
  out.integral = state.integral;
  for (std::size_t b = 0; b < bins; ++b) {
    ExpectBin(state, b, out.mu[b], out.sigma_mu[b]);
  }
}

void ExpectationAt(const EwmaState& state, std::span<const std::uint32_t> bins,
                   std::span<double> mu, std::span<double> sigma_mu) {
  assert(mu.size() >= bins.size() && sigma_mu.size() >= bins.size());
  for (std::size_t i = 0; i < bins.size(); ++i) {
    ExpectBin(state, bins[i], mu[i], sigma_mu[i]);
  }
}

DINAMO_HOT_PATH Score ScoreEwma(const EwmaState& state, const Observation& obs,
                                std::span<double> pulls) {
  const std::size_t bins = state.bins();
  assert(obs.bins() == bins && pulls.size() == bins);
  if (state.alpha >= 1.0) {
    Expectation e;
    ExpectationOf(state, e);
    return ScoreObservation(obs, e, pulls);
  }

  // sigma^2 = var_x + S_sigma / W, pull = (x - S_mu / W) / sigma, computed with one division
  // by W per bin.
  const double* w = state.weight.data();
  const double* smu = state.sum_mu.data();
  const double* ssig = state.sum_sigma.data();
  const double* x = obs.x.data();
  const double* vx = obs.var_x.data();
  double* pull = pulls.data();

  double chi2 = 0.0;
#pragma omp simd reduction(+ : chi2)
  for (std::size_t b = 0; b < bins; ++b) {
    const double inv_w = 1.0 / w[b];
    const double var = std::max(vx[b] + ssig[b] * inv_w, kMinVariance);
    const double p = (x[b] - smu[b] * inv_w) / std::sqrt(var);
    pull[b] = p;
    chi2 += p * p;
  }
  return {chi2, LogReducedChi2(chi2, bins)};
}

DINAMO_HOT_PATH bool LearnEwma(EwmaState& state, const Observation& obs) {
  assert(obs.bins() == state.bins());
  if (obs.empty()) return false;

  const double a = state.alpha;
  const double na = 1.0 - a;
  double* w = state.weight.data();
  double* smu = state.sum_mu.data();
  double* ssig = state.sum_sigma.data();
  const double* x = obs.x.data();
  const double* vx = obs.var_x.data();
  const std::size_t bins = state.bins();

  // The residual uses the template before this update, so S_sigma is updated first.
#pragma omp simd
  for (std::size_t b = 0; b < bins; ++b) {
    const double omega = na / (vx[b] + kWeightFloor);
    const double mu = w[b] > 0.0 ? smu[b] / w[b] : 1.0 / static_cast<double>(bins);
    const double d = x[b] - mu;
    ssig[b] = a * ssig[b] + omega * d * d;
    smu[b] = a * smu[b] + omega * x[b];
    w[b] = a * w[b] + omega;
  }
  state.integral = a * state.integral + na * obs.integral;
  ++state.learned_runs;
  return true;
}

}  // namespace dinamo
