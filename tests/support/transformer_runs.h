#pragma once

// Small models and made-up runs shared by the DINAMO-ML tests.

#include <cstdint>
#include <vector>

#include "dinamo/observation.h"
#include "dinamo/transformer_template.h"

namespace dinamo::testing {

inline constexpr std::size_t kBins = 10;

inline TransformerOptions SmallOptions() {
  TransformerOptions o;
  o.bins = kBins;
  o.max_steps = 15;  // keeps the tests fast; the stopping rule has its own tests
  return o;
}

// A histogram whose shape changes with the run, so that every run is told apart.
inline Observation RunObservation(std::int64_t run) {
  std::vector<double> counts(kBins);
  for (std::size_t b = 0; b < kBins; ++b) {
    counts[b] = 200.0 + 40.0 * static_cast<double>(b) + 3.0 * static_cast<double>(run % 17);
  }
  return Normalise(counts);
}

}  // namespace dinamo::testing
