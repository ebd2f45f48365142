#pragma once

// Scoring a histogram against a template: per-bin pulls, chi-square and the alarm statistic
// s = ln(chi2 / B) (DESIGN.md section 2).

#include <cstdint>
#include <span>
#include <vector>

#include "dinamo/observation.h"

namespace dinamo {

// A bin known exactly on both sides (a one-bin histogram, say) would give 0/0. Its variance is
// floored at an uncertainty of 1e-12 on a normalised content, far below any real histogram's
// (that needs 1e12 entries) yet large enough that rounding residuals of 1e-16 pull nothing.
inline constexpr double kMinVariance = 1e-24;

// What a template predicts for the next histogram: normalised contents and their uncertainty.
struct Expectation {
  std::vector<double> mu;
  std::vector<double> sigma_mu;
  double integral = 0.0;  // the template's integral I_mu; 0 when the method has none

  std::size_t bins() const { return mu.size(); }
};

struct Score {
  double chi2 = 0.0;
  double log_reduced_chi2 = 0.0;  // ln(chi2 / B); -inf for a perfect match

  bool Anomalous(double threshold) const { return log_reduced_chi2 > threshold; }
};

// Scores `obs` against `expected`; writes one pull per bin into `pulls` (sized to the bins).
Score ScoreObservation(const Observation& obs, const Expectation& expected,
                       std::span<double> pulls);

// Statistical debiasing for runs whose statistics differ from the template's: the chi2 and the
// pulls are averaged over `resamples` Gaussian resamples drawn from a generator seeded with
// `seed`, so the same inputs always give the same score.
struct Debiasing {
  int resamples = 100;
  std::uint64_t seed = 0;
};
Score ScoreDebiased(const Observation& obs, const Expectation& expected,
                    const Debiasing& debiasing, std::span<double> pulls);

// The bins of the top.size() largest |pull|, largest first; NaN pulls rank last and the lower
// bin comes first among equals. Returns how many were written (fewer when there are fewer bins).
std::size_t LargestPulls(std::span<const double> pulls, std::span<std::uint32_t> top);

// ln(chi2 / bins) with the conventions above.
double LogReducedChi2(double chi2, std::size_t bins);

}  // namespace dinamo
