#pragma once

// Offline replay: a recorded sequence of runs scored one after the other against an evolving
// template, learning as the labels say (DESIGN.md section 7).

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <vector>

#include "dinamo/journalled_template.h"
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

// Where the labels of a replay come from after the calibration runs (which always use the
// file's labels, as calibration needs them).
enum class LabelPolicy {
  kOracle,  // every run's label in the file teaches: the paper's protocol
  kReview,  // a run that is not anomalous teaches by itself; the label of an anomalous run is
            // revealed label_delay runs later, as a shifter's answer, and applied by the journal
  kNone,    // no label is used: runs teach when not anomalous
};

struct ProtocolOptions {
  LabelPolicy labels = LabelPolicy::kOracle;
  std::size_t label_delay = 0;       // runs between an anomalous run and its label (kReview)
  std::size_t calibration_runs = 0;  // these first runs always teach by the file's labels
  double threshold = 1.0;            // decides "anomalous" for kReview and kNone
  std::optional<Debiasing> debiasing;  // kOracle only
  // When set, called once with the verdicts of the calibration runs; what it returns replaces
  // `threshold` from then on.
  std::function<double(const std::vector<RunVerdict>&)> choose_threshold;
};

struct ProtocolResult {
  std::vector<RunVerdict> verdicts;
  std::size_t labels_used = 0;  // labels revealed after the calibration runs
  double threshold = 0.0;       // the threshold in force after the calibration runs
};

// Replays the table under a label policy. Throws std::invalid_argument for option combinations
// that are not supported (debiasing with kReview or kNone).
ProtocolResult ReplayProtocol(const RunTable& table, std::unique_ptr<TemplateModel> model,
                              const ProtocolOptions& options);

// A per-run seed that does not repeat between neighbouring runs or seeds.
std::uint64_t DebiasingSeed(std::uint64_t seed, std::size_t index);

}  // namespace dinamo
