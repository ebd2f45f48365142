#include "dinamo/observation.h"

#include <cmath>
#include <limits>
#include <string>

#include "hot_path.h"

namespace dinamo {

DINAMO_HOT_PATH void Normalise(std::span<const double> counts, Observation& out) {
  const std::size_t bins = counts.size();
  out.x.resize(bins);
  out.var_x.resize(bins);

  // Partial sums in SIMD lanes: exact for integer counts (below 2^53), and otherwise within a
  // few units in the last place of the sequential sum.
  double integral = 0.0;
  const double* c = counts.data();
#pragma omp simd reduction(+ : integral)
  for (std::size_t b = 0; b < bins; ++b) {
    integral += c[b];
  }
  out.integral = integral;

  // Too few entries to normalise: keep the raw contents and claim no knowledge of their spread.
  if (integral <= kEmptyIntegral) {
    for (std::size_t b = 0; b < bins; ++b) {
      out.x[b] = counts[b];
      out.var_x[b] = 0.0;
    }
    return;
  }

  // An empty bin still carries the information "fewer than one entry in I": sigma = 1 / I.
  const double inv = 1.0 / integral;
  const double var_empty = inv * inv;
  for (std::size_t b = 0; b < bins; ++b) {
    const double x = counts[b] / integral;
    out.x[b] = x;
    out.var_x[b] = x == 0.0 ? var_empty : (x - x * x) / integral;
  }
}

Observation Normalise(std::span<const double> counts) {
  Observation obs;
  Normalise(counts, obs);
  return obs;
}

std::optional<std::string> CheckCounts(std::span<const double> counts) {
  if (counts.empty()) return "histogram has no bins";
  // One branch-free pass first (NaN fails both comparisons): good input, the usual case, is
  // done in a few vector instructions; the loop below only runs to say which bin is wrong.
  bool good = true;
  for (const double c : counts) {
    good &= (c >= 0.0) & (c <= std::numeric_limits<double>::max());
  }
  if (good) return std::nullopt;
  for (std::size_t b = 0; b < counts.size(); ++b) {
    const double c = counts[b];
    if (std::isnan(c)) return "count of bin " + std::to_string(b) + " is NaN";
    if (std::isinf(c)) return "count of bin " + std::to_string(b) + " is infinite";
    if (c < 0.0) return "count of bin " + std::to_string(b) + " is negative";
  }
  return std::nullopt;
}

}  // namespace dinamo
