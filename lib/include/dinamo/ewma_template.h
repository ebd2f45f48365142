#pragma once

// DINAMO-S: the reference template as an exponentially weighted moving average with per-bin
// uncertainties (DESIGN.md section 2).

#include <cstdint>
#include <span>
#include <vector>

#include "dinamo/observation.h"
#include "dinamo/score.h"

namespace dinamo {

// The whole learned state of one template: a plain value, cheap to copy and to serialise.
// Per bin b: weight W_b, weighted sum of contents S_mu_b and of squared residuals S_sigma_b.
struct EwmaState {
  double alpha = 0.5;
  double integral = 0.0;           // I_mu
  std::uint64_t learned_runs = 0;  // how many runs this template has learned from
  std::vector<double> weight;
  std::vector<double> sum_mu;
  std::vector<double> sum_sigma;

  std::size_t bins() const { return weight.size(); }
  bool operator==(const EwmaState&) const = default;
};

// The uniform starting template for `bins` bins and memory `alpha`.
EwmaState InitialEwmaState(std::size_t bins, double alpha);

// mu_b = S_mu_b / W_b, sigma_mu_b = sqrt(S_sigma_b / W_b). With alpha = 1 nothing is ever
// learned and the weights stay zero; the template is then the uniform starting one.
void ExpectationOf(const EwmaState& state, Expectation& out);

// The same numbers for the listed bins only (a verdict reports a few bins).
void ExpectationAt(const EwmaState& state, std::span<const std::uint32_t> bins,
                   std::span<double> mu, std::span<double> sigma_mu);

// Scores `obs` against the template straight from its sums, without materialising an
// Expectation: the hot path of the daemon. Same numbers as ScoreObservation(ExpectationOf()).
Score ScoreEwma(const EwmaState& state, const Observation& obs, std::span<double> pulls);

// Learns from a run accepted as good. Must be called after the run was scored; an empty
// observation (integral <= kEmptyIntegral) is ignored and false is returned.
bool LearnEwma(EwmaState& state, const Observation& obs);

}  // namespace dinamo
