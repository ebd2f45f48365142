#pragma once

// method "transformer" in dinamod (issue 5, daemon/README.md "Transformer templates"): the
// template the monitor scores with, and the scheduler that trains it on the TrainingPool. Only
// built with libtorch; libtorch's headers stay behind dinamo/transformer_template.h.
//
// The loop never trains and never builds a model: it scores with the last trained model
// (shared, immutable) and remembers the good runs recorded since. A worker clones that model,
// records those runs into the clone, trains it and hands it back; the loop then scores with it.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "config.h"
#include "dinamo/observation.h"
#include "dinamo/score.h"
#include "dinamo/template_model.h"
#include "dinamo/transformer_template.h"
#include "monitor.h"
#include "training_pool.h"

namespace dinamo::daemon {

// What the loop knows of one histogram's transformer, shared by the template and by the
// training in flight (which holds it weakly: a reset template orphans it and the result is
// discarded). Touched on the loop only.
struct TransformerSlot {
  struct Pending {
    std::int64_t run = 0;
    Observation obs;
  };

  std::string histogram;
  std::shared_ptr<const TransformerModel> trained;  // read by the loop and by workers
  std::vector<Pending> pending;       // good runs recorded since `trained` (increasing runs)
  std::uint64_t pending_trimmed = 0;  // older pending runs forgotten (only K + M are read)
  // Set by a late label (DeferredTransformer::Relearn): the good runs the next training gives
  // the model in place of those `trained` recorded, before it records `pending`, and the count
  // of runs learned that goes with them.
  std::optional<std::vector<GoodRun>> relearned;
  std::uint64_t relearned_count = 0;
  std::int64_t relearned_through = 0;  // the newest journalled run then: runs after it are new
  std::uint64_t relearns = 0;          // late labels applied: a training clears only its own
  std::uint64_t relearns_counted = 0;  // of those, the ones in TrainingCounters::relearns
  bool in_flight = false;              // a training is queued or running
  bool owed = false;                   // good runs arrived while it was running
  // Templates of the runs expected_first, expected_first + 1, ... from `trained`, computed by
  // the worker that trained it (the context does not change until the next training).
  std::int64_t expected_first = 0;
  std::vector<Expectation> expected;
  // The last forward pass on the loop, for a run outside that window.
  std::optional<std::int64_t> loop_run;
  Expectation loop_expected;
};

// DINAMO-ML behind the monitor's template interface, cheap on the loop: Learn only remembers.
//
// Late labels (daemon/README.md "Late labels"): the journal is not replayed (that would train
// once per journalled run). Relearn rebuilds the good runs the model trains on from the journal
// (the relabelled run added or removed; at most K + M kept), the weights and the optimiser state
// stay, and the next training (one, on a worker) starts from them with the corrected runs.
// Until it is back, verdicts use the last trained model.
class DeferredTransformer final : public TemplateModel {
 public:
  explicit DeferredTransformer(std::shared_ptr<const TransformerModel> initial);

  std::string_view method() const override { return "transformer"; }
  std::size_t bins() const override;
  void Expect(std::int64_t run, Expectation& out) const override;
  bool Learn(std::int64_t run, const Observation& obs) override;
  std::uint64_t learned_runs() const override;
  std::unique_ptr<TemplateModel> Clone() const override;
  bool ReplaysJournal() const override { return false; }
  std::optional<std::string> Relearn(std::span<const JournalledRun> journal,
                                     std::int64_t changed) override;

  const std::shared_ptr<TransformerSlot>& slot() const { return slot_; }

 private:
  std::shared_ptr<TransformerSlot> slot_;
};

// Loop-side counters of the trainings, for /metrics.
struct TrainingCounters {
  std::uint64_t submitted = 0;
  std::uint64_t coalesced = 0;  // good runs folded into a training still queued
  std::uint64_t completed = 0;
  std::uint64_t dropped = 0;    // oldest queued training dropped because the queue was full
  std::uint64_t discarded = 0;  // finished for a template that was reset meanwhile
  std::uint64_t relearns = 0;   // late labels that changed the good runs a template trains on
  std::uint64_t steps = 0;
  double seconds = 0.0;
};

// How a worker trains a clone of the last trained model once the pending runs are recorded
// into it: the real one steps until early stopping (or `max_steps`, or cancellation); tests
// inject slow or scripted ones. Returns the steps taken.
using TrainFunction =
    std::function<int(TransformerModel& model, int max_steps, const std::atomic<bool>& cancel)>;

int TrainUntilStopped(TransformerModel& model, int max_steps, const std::atomic<bool>& cancel);

class TransformerTrainer {
 public:
  TransformerTrainer(TrainingPool& pool, const TrainingConfig& config,
                     TrainFunction train = TrainUntilStopped);

  // A final run taught `model`, or a late label changed what it learns (the monitor's hook):
  // schedules a training when it is a transformer, coalescing with one still queued. Other
  // methods are ignored.
  void OnLearned(const std::string& histogram, TemplateModel& model);

  // Schedules the training a restored template still owes (a snapshot taken meanwhile: pending
  // runs or a late label's corrected runs).
  void Resume(DeferredTransformer& model);

  const TrainingCounters& counters() const { return counters_; }
  void RenderMetrics(std::string& out) const;

 private:
  class Task;
  std::unique_ptr<TrainingTask> MakeTask(const std::shared_ptr<TransformerSlot>& slot);
  // `release`: a model replaced on the loop, freed by the worker that takes the task (freeing a
  // model is a millisecond the loop need not spend).
  void Submit(const std::shared_ptr<TransformerSlot>& slot,
              std::shared_ptr<const TransformerModel> release = nullptr);
  void Finished(Task& task, TrainingTask::Outcome outcome);

  TrainingPool& pool_;
  TrainingConfig config_;
  TrainFunction train_;
  TrainingCounters counters_;
};

// Registers method "transformer" with the monitor's model factories: models of the published
// architecture for the histogram's bins, libtorch's threads from `config`. One initial model
// per bin count is built and shared (every fresh template starts from the same seed).
void RegisterTransformerMethod(const TrainingConfig& config);

// Registers how transformer templates go into snapshots (monitor.h, ModelPersistence): the
// last trained model's bytes, the pending good runs and a late label's corrected runs. A
// restored template that still owes a training has it queued on `trainer` (if given), so a
// restart continues where it stopped.
void RegisterTransformerPersistence(const TrainingConfig& config, TransformerTrainer* trainer);

}  // namespace dinamo::daemon
