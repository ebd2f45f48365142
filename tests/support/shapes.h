#pragma once

// Small histograms with a known shape for tests that need a few plausible runs.

#include <cmath>
#include <cstddef>
#include <vector>

namespace dinamo::testing {

// A 20-bin Gaussian bump of about 7500 entries, its peak moved by `shift` bins.
inline std::vector<double> Bell(double shift) {
  std::vector<double> counts(20);
  for (std::size_t b = 0; b < counts.size(); ++b) {
    const double z = (static_cast<double>(b) - 9.5 - shift) / 3.0;
    counts[b] = std::round(1000.0 * std::exp(-0.5 * z * z)) + 1.0;
  }
  return counts;
}

}  // namespace dinamo::testing
