#pragma once

// Offline replay: a recorded sequence of runs scored one after the other against an evolving
// template, learning as the labels say (DESIGN.md section 7).

#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "dinamo/run_table.h"
#include "dinamo/score.h"
#include "dinamo/template_model.h"

namespace dinamo {

struct RunVerdict {
  std::int64_t run = 0;
  Label label = Label::kUnknown;
  double chi2 = 0.0;
  double log_reduced_chi2 = 0.0;
};

struct ReplayOptions {
  // When set, every run is scored with statistical debiasing; run i uses the generator seeded
  // with DebiasingSeed(seed, i).
  std::optional<Debiasing> debiasing;
};

// The paper's protocol ("oracle" labels): every run is scored, then a run labelled good teaches.
// Unknown and bad runs never teach. Replays at most `count` runs from the start of the table.
std::vector<RunVerdict> Replay(const RunTable& table, TemplateModel& model,
                               const ReplayOptions& options,
                               std::size_t count = std::numeric_limits<std::size_t>::max());

// The log reduced chi2 of every run of a DINAMO-S replay with memory `alpha`.
std::vector<double> ReplayEwmaScores(const RunTable& table, double alpha, std::size_t count);

// A per-run seed that does not repeat between neighbouring runs or seeds.
std::uint64_t DebiasingSeed(std::uint64_t seed, std::size_t index);

}  // namespace dinamo
