#pragma once

// The "floor" for one DINAMO-S step: the per-bin formulas of ScoreEwma and LearnEwma
// (DESIGN.md section 2) fused into one pass and written by hand with AVX2 intrinsics. It tells
// how fast the arithmetic itself can go on this machine, so that the library's figure can be
// read as a ratio. Not used by the library.

#include <cstddef>

namespace dinamo::bench {

// Per-bin arrays of one template and one observation, all of `bins` elements.
struct FloorData {
  std::size_t bins = 0;
  double alpha = 0.5;
  double* weight = nullptr;
  double* sum_mu = nullptr;
  double* sum_sigma = nullptr;
  const double* x = nullptr;
  const double* var_x = nullptr;
  double* pulls = nullptr;
};

// Scores x against the template (writes the pulls, returns chi2), then learns from x as a good
// run. Requires alpha < 1 (every weight positive). Dispatches at run time to the AVX2 version
// when the processor has AVX2 and FMA, otherwise to FloorStepScalar.
double FloorStep(const FloorData& d);

// The same pass in plain C++, one bin at a time (the compiler may still vectorise it).
double FloorStepScalar(const FloorData& d);

// Whether FloorStep uses the AVX2 version on this processor.
bool FloorUsesAvx2();

}  // namespace dinamo::bench
