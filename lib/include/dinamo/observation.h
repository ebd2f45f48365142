#pragma once

// A histogram as the method sees it: contents normalised to unit integral, with the Poisson
// uncertainty of every normalised bin (DESIGN.md section 2).

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace dinamo {

// Integrals at or below this are "empty": such a histogram is scored but never learned from.
inline constexpr double kEmptyIntegral = 1e-9;

struct Observation {
  std::vector<double> x;       // normalised contents, row-major over all axes
  std::vector<double> var_x;   // Poisson variance of each normalised bin
  double integral = 0.0;       // sum of the raw counts

  std::size_t bins() const { return x.size(); }
  bool empty() const { return integral <= kEmptyIntegral; }
};

// Fills `out` from raw counts, reusing its buffers (no allocation once they have grown).
// Counts must have passed CheckCounts.
void Normalise(std::span<const double> counts, Observation& out);
Observation Normalise(std::span<const double> counts);

// Why these counts cannot be used ("count of bin 7 is NaN"), or nothing when they can.
std::optional<std::string> CheckCounts(std::span<const double> counts);

}  // namespace dinamo
