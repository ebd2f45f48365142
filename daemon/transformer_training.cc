#include "transformer_training.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace dinamo::daemon {
namespace {

// Where the templates of transformer verdicts came from (loop thread only).
struct ExpectationCounts {
  std::uint64_t worker = 0;
  std::uint64_t loop = 0;
};
ExpectationCounts g_expectations;

// The good runs a training step and the scoring of later runs ever read (K + M).
std::size_t KeptRuns(const TransformerModel& model) {
  const TransformerOptions& o = model.options();
  return static_cast<std::size_t>(o.batch_runs + o.context_runs);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// DeferredTransformer

DeferredTransformer::DeferredTransformer(std::shared_ptr<const TransformerModel> initial)
    : slot_(std::make_shared<TransformerSlot>()) {
  slot_->trained = std::move(initial);
}

std::size_t DeferredTransformer::bins() const { return slot_->trained->bins(); }

void DeferredTransformer::Expect(std::int64_t run, Expectation& out) const {
  TransformerSlot& s = *slot_;
  const std::int64_t i = run - s.expected_first;
  if (i >= 0 && i < static_cast<std::int64_t>(s.expected.size())) {
    ++g_expectations.worker;
    out = s.expected[static_cast<std::size_t>(i)];
    return;
  }
  // A model that has recorded no run reads a context of padding only, whatever the run: one
  // forward pass serves every run until its first training is back.
  const bool same = s.loop_run == run || (s.loop_run && s.trained->learned_runs() == 0);
  if (!same) {
    // A forward pass on the loop (about a millisecond): outside the worker's window.
    ++g_expectations.loop;
    s.trained->Expect(run, s.loop_expected);
    s.loop_run = run;
  }
  out = s.loop_expected;
}

bool DeferredTransformer::Learn(std::int64_t run, const Observation& obs) {
  TransformerSlot& s = *slot_;
  if (obs.empty() || obs.bins() != bins()) {
    return false;
  }
  if (!s.pending.empty() && run <= s.pending.back().run) {
    return false;
  }
  s.pending.push_back({run, obs});
  // Trainings that cannot keep up (dropped from a full queue) must not grow this without bound.
  const std::size_t keep = KeptRuns(*s.trained);
  if (s.pending.size() > keep) {
    const std::size_t excess = s.pending.size() - keep;
    s.pending.erase(s.pending.begin(), s.pending.begin() + static_cast<std::ptrdiff_t>(excess));
    s.pending_trimmed += excess;
  }
  return true;
}

std::uint64_t DeferredTransformer::learned_runs() const {
  const TransformerSlot& s = *slot_;
  const std::uint64_t recorded = s.relearned ? s.relearned_count : s.trained->learned_runs();
  return recorded + s.pending.size() + s.pending_trimmed;
}

std::optional<std::string> DeferredTransformer::Relearn(std::span<const JournalledRun> journal,
                                                        std::int64_t changed) {
  const auto it = std::find_if(journal.begin(), journal.end(),
                               [changed](const JournalledRun& r) { return r.run == changed; });
  if (it == journal.end()) {
    return "run " + std::to_string(changed) + " is not in the journal";
  }
  TransformerSlot& s = *slot_;
  const std::size_t keep = KeptRuns(*s.trained);
  const std::int64_t first = journal.front().run;

  // The journal decides every run from its oldest on; before it, the runs recorded so far stay
  // (those of an earlier late label or of the trained model, then the pending ones).
  std::vector<GoodRun> runs;
  const auto older = [first](std::int64_t run) { return run < first; };
  for (const GoodRun& g :
       s.relearned ? std::span<const GoodRun>(*s.relearned) : s.trained->history()) {
    if (older(g.run)) {
      runs.push_back(g);
    }
  }
  for (const TransformerSlot::Pending& p : s.pending) {
    if (older(p.run)) {
      runs.push_back({p.run, std::vector<float>(p.obs.x.begin(), p.obs.x.end())});
    }
  }

  // Only the newest K + M good runs are ever read: normalise no more journalled runs than that.
  std::vector<const JournalledRun*> learned;
  for (auto r = journal.rbegin(); r != journal.rend() && learned.size() < keep; ++r) {
    if (r->learned) {
      learned.push_back(&*r);
    }
  }
  Observation obs;
  for (auto r = learned.rbegin(); r != learned.rend(); ++r) {
    Normalise((*r)->counts, obs);
    if (obs.empty() || obs.bins() != bins()) {
      return "journalled run " + std::to_string((*r)->run) + " cannot teach this template";
    }
    runs.push_back({(*r)->run, std::vector<float>(obs.x.begin(), obs.x.end())});
  }
  if (runs.size() > keep) {
    runs.erase(runs.begin(), runs.end() - static_cast<std::ptrdiff_t>(keep));
  }

  // The run counts once more or once less; the pending runs are in `runs` now.
  const std::uint64_t count = learned_runs();
  s.relearned_count = it->learned ? count + 1 : std::max<std::uint64_t>(count, 1) - 1;
  s.relearned = std::move(runs);
  s.relearned_through = journal.back().run;
  s.pending.clear();
  s.pending_trimmed = 0;
  ++s.relearns;
  return std::nullopt;
}

std::unique_ptr<TemplateModel> DeferredTransformer::Clone() const {
  auto copy = std::make_unique<DeferredTransformer>(slot_->trained);
  TransformerSlot& s = *copy->slot_;
  s = *slot_;
  s.in_flight = false;  // the training in flight belongs to the original
  s.owed = false;
  return copy;
}

// ---------------------------------------------------------------------------------------------
// Training

int TrainUntilStopped(TransformerModel& model, int max_steps, const std::atomic<bool>& cancel) {
  if (model.learned_runs() == 0) {
    return 0;
  }
  const TransformerOptions& o = model.options();
  // Train() with a budget and a way out: the same steps, one TrainStep at a time.
  EarlyStopping stopping(o.patience, std::min(max_steps, o.max_steps));
  while (!cancel.load(std::memory_order_relaxed) && stopping.Continue(model.TrainStep())) {
  }
  return stopping.steps();
}

class TransformerTrainer::Task final : public TrainingTask {
 public:
  Task(TransformerTrainer& trainer, const std::shared_ptr<TransformerSlot>& slot)
      : trainer_(trainer),
        slot_(slot),
        base_(slot->trained),
        pending_(slot->pending),
        relearned_(slot->relearned),
        relearned_count_(slot->relearned_count),
        relearns_(slot->relearns),
        max_steps_(trainer.config_.max_steps),
        ahead_(trainer.config_.expect_ahead) {
    std::int64_t last = pending_.empty() ? 0 : pending_.back().run;
    if (relearned_) {
      last = std::max(last, slot->relearned_through);
    }
    next_run_ = last + 1;
  }

  void Run(const std::atomic<bool>& cancel) override {
    const auto start = std::chrono::steady_clock::now();
    release_.reset();
    trained_ = base_->CloneTransformer();
    // A late label's corrected runs replace the recorded ones; the weights stay. They were
    // checked where they were made (Relearn, LoadTransformer): this cannot refuse them.
    if (relearned_) {
      trained_->ReplaceHistory(std::move(*relearned_), relearned_count_);
    }
    for (const TransformerSlot::Pending& p : pending_) {
      trained_->Record(p.run, p.obs);
    }
    steps_ = trainer_.train_(*trained_, max_steps_, cancel);
    // The verdicts of the next runs then cost the loop a copy instead of a forward pass. One
    // forward pass per run, as the loop would do it: the same numbers to the last bit.
    expected_.resize(cancel ? 0 : static_cast<std::size_t>(ahead_));
    for (std::size_t i = 0; i < expected_.size() && !cancel; ++i) {
      trained_->Expect(next_run_ + static_cast<std::int64_t>(i), expected_[i]);
    }
    seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  void Finish(Outcome outcome) override { trainer_.Finished(*this, outcome); }

 private:
  friend class TransformerTrainer;

  TransformerTrainer& trainer_;
  std::weak_ptr<TransformerSlot> slot_;
  std::shared_ptr<const TransformerModel> base_;
  std::shared_ptr<const TransformerModel> release_;
  std::vector<TransformerSlot::Pending> pending_;
  std::optional<std::vector<GoodRun>> relearned_;
  std::uint64_t relearned_count_ = 0;
  std::uint64_t relearns_ = 0;
  int max_steps_;
  std::int64_t next_run_ = 1;
  std::unique_ptr<TransformerModel> trained_;
  int ahead_ = 0;
  std::vector<Expectation> expected_;
  int steps_ = 0;
  double seconds_ = 0.0;
};

TransformerTrainer::TransformerTrainer(TrainingPool& pool, const TrainingConfig& config,
                                       TrainFunction train)
    : pool_(pool), config_(config), train_(std::move(train)) {}

std::unique_ptr<TrainingTask> TransformerTrainer::MakeTask(
    const std::shared_ptr<TransformerSlot>& slot) {
  return std::make_unique<Task>(*this, slot);
}

void TransformerTrainer::OnLearned(const std::string& histogram, TemplateModel& model) {
  auto* transformer = dynamic_cast<DeferredTransformer*>(&model);
  if (transformer == nullptr) {
    return;
  }
  const std::shared_ptr<TransformerSlot>& slot = transformer->slot();
  slot->histogram = histogram;
  counters_.relearns += slot->relearns - slot->relearns_counted;
  slot->relearns_counted = slot->relearns;
  if (!slot->in_flight) {
    Submit(slot);
    return;
  }
  // At most one training per histogram: fold the new run into the one still queued, or owe
  // one more for when the running one is back (it then starts from the weights it produced).
  std::unique_ptr<TrainingTask> task = MakeTask(slot);
  if (pool_.Replace(reinterpret_cast<std::uintptr_t>(slot.get()), task)) {
    ++counters_.coalesced;
  } else {
    slot->owed = true;
  }
}

void TransformerTrainer::Resume(DeferredTransformer& model) {
  const std::shared_ptr<TransformerSlot>& slot = model.slot();
  if (!slot->in_flight && (!slot->pending.empty() || slot->relearned)) {
    Submit(slot);
  }
}

void TransformerTrainer::Submit(const std::shared_ptr<TransformerSlot>& slot,
                                std::shared_ptr<const TransformerModel> release) {
  const auto key = reinterpret_cast<std::uintptr_t>(slot.get());
  auto task = std::make_unique<Task>(*this, slot);
  task->release_ = std::move(release);
  if (pool_.Submit(key, std::move(task)) == TrainingPool::Submitted::kStopped) {
    return;
  }
  slot->in_flight = true;
  slot->owed = false;
  ++counters_.submitted;
}

void TransformerTrainer::Finished(Task& task, TrainingTask::Outcome outcome) {
  const std::shared_ptr<TransformerSlot> slot = task.slot_.lock();
  if (!slot) {
    ++counters_.discarded;  // the template was reset or replaced meanwhile
    return;
  }
  slot->in_flight = false;
  if (outcome == TrainingTask::Outcome::kDropped) {
    // Its runs stay pending: the histogram's next good run trains on all of them.
    ++counters_.dropped;
    spdlog::debug("training dropped histogram={} reason=queue_full", slot->histogram);
    slot->owed = false;
    return;
  }
  if (outcome != TrainingTask::Outcome::kCompleted) {
    return;
  }
  ++counters_.completed;
  counters_.steps += static_cast<std::uint64_t>(task.steps_);
  counters_.seconds += task.seconds_;

  // The trained model has recorded the runs the task carried; later ones stay pending.
  const std::int64_t through = task.pending_.empty() ? 0 : task.pending_.back().run;
  auto& pending = slot->pending;
  pending.erase(pending.begin(), std::find_if(pending.begin(), pending.end(),
                                              [through](const TransformerSlot::Pending& p) {
                                                return p.run > through;
                                              }));
  std::shared_ptr<const TransformerModel> replaced = std::move(slot->trained);
  task.base_.reset();
  slot->trained = std::shared_ptr<const TransformerModel>(std::move(task.trained_));
  if (task.relearns_ == slot->relearns) {
    slot->relearned.reset();  // applied; a later late label would have counted up
  }
  slot->expected_first = task.next_run_;
  slot->expected = std::move(task.expected_);
  slot->loop_run.reset();
  spdlog::debug("training done histogram={} steps={} seconds={:.3f} pending={}", slot->histogram,
                task.steps_, task.seconds_, pending.size());
  if (slot->owed || !pending.empty() || slot->relearned) {
    Submit(slot, std::move(replaced));
  }
}

void TransformerTrainer::RenderMetrics(std::string& out) const {
  const auto counter = [&out](std::string_view name, std::string_view help, auto v) {
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help,
                   name, name, v);
  };
  const auto gauge = [&out](std::string_view name, std::string_view help, auto v) {
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help,
                   name, name, v);
  };
  counter("dinamo_trainings_submitted_total", "Transformer trainings queued", counters_.submitted);
  counter("dinamo_trainings_coalesced_total",
          "Good runs folded into a transformer training still queued", counters_.coalesced);
  counter("dinamo_trainings_completed_total", "Transformer trainings finished and applied",
          counters_.completed);
  counter("dinamo_trainings_dropped_total",
          "Oldest queued transformer trainings dropped because the queue was full",
          counters_.dropped);
  counter("dinamo_trainings_discarded_total",
          "Transformer trainings finished for a template reset meanwhile", counters_.discarded);
  counter("dinamo_transformer_relearns_total",
          "Late labels that changed the good runs a transformer template trains on",
          counters_.relearns);
  counter("dinamo_training_steps_total", "Transformer training steps taken", counters_.steps);
  counter("dinamo_training_seconds_total", "Seconds workers spent in transformer trainings",
          counters_.seconds);
  out +=
      "# HELP dinamo_transformer_templates_total Templates of transformer verdicts, by where "
      "they were computed (worker: ahead, after a training; loop: a forward pass on the loop)\n"
      "# TYPE dinamo_transformer_templates_total counter\n";
  fmt::format_to(std::back_inserter(out),
                 "dinamo_transformer_templates_total{{source=\"worker\"}} {}\n"
                 "dinamo_transformer_templates_total{{source=\"loop\"}} {}\n",
                 g_expectations.worker, g_expectations.loop);
  gauge("dinamo_training_queue_depth", "Transformer trainings waiting for a worker",
        pool_.queue_depth());
  gauge("dinamo_trainings_running", "Transformer trainings on a worker now", pool_.running());
}

// ---------------------------------------------------------------------------------------------
// The method

void RegisterTransformerMethod(const TrainingConfig& config) {
  auto initial = std::make_shared<std::map<std::size_t, std::shared_ptr<const TransformerModel>>>();
  RegisterModelFactory("transformer",
                       [config, initial](std::size_t bins, const HistogramSettings&) {
                         auto& model = (*initial)[bins];
                         if (!model) {
                           TransformerOptions options;
                           options.bins = bins;
                           options.threads = config.threads_per_worker;
                           model = std::make_shared<const TransformerModel>(options);
                         }
                         return std::make_unique<DeferredTransformer>(model);
                       });
}

namespace {

void SaveTransformer(const TemplateModel& model, v1::HistogramState& state) {
  const auto& t = dynamic_cast<const DeferredTransformer&>(model);
  const TransformerSlot& slot = *t.slot();
  v1::TransformerTemplateState* ts = state.mutable_transformer();
  std::ostringstream bytes;
  slot.trained->Save(bytes);
  ts->set_model(bytes.str());
  for (const TransformerSlot::Pending& p : slot.pending) {
    ts->add_pending_runs(p.run);
    ts->mutable_pending_x()->Add(p.obs.x.begin(), p.obs.x.end());
    ts->add_pending_integral(p.obs.integral);
  }
  ts->set_pending_trimmed(slot.pending_trimmed);
  if (slot.relearned) {
    ts->set_relearned(true);
    for (const GoodRun& g : *slot.relearned) {
      ts->add_relearned_runs(g.run);
      ts->mutable_relearned_x()->Add(g.x.begin(), g.x.end());
    }
    ts->set_relearned_count(slot.relearned_count);
    ts->set_relearned_through(slot.relearned_through);
  }
}

// A late label's corrected runs from a snapshot, or why they cannot be used.
std::optional<std::string> LoadRelearned(const v1::TransformerTemplateState& ts, std::size_t bins,
                                         std::size_t keep, TransformerSlot& slot) {
  const auto n = static_cast<std::size_t>(ts.relearned_runs_size());
  if (!ts.relearned()) {
    return n == 0 && ts.relearned_x_size() == 0
               ? std::nullopt
               : std::optional<std::string>("transformer relearned runs without their flag");
  }
  if (n > keep || static_cast<std::size_t>(ts.relearned_x_size()) != n * bins) {
    return "transformer relearned runs do not match its axes";
  }
  std::vector<GoodRun> runs(n);
  for (std::size_t i = 0; i < n; ++i) {
    runs[i].run = ts.relearned_runs(static_cast<int>(i));
    const float* row = ts.relearned_x().data() + i * bins;
    runs[i].x.assign(row, row + bins);
    if (i > 0 && runs[i].run <= runs[i - 1].run) {
      return "transformer relearned runs out of order";
    }
  }
  if (!runs.empty() && !slot.pending.empty() && slot.pending.front().run <= runs.back().run) {
    return "transformer pending runs not after the relearned ones";
  }
  slot.relearned = std::move(runs);
  slot.relearned_count = ts.relearned_count();
  slot.relearned_through = ts.relearned_through();
  return std::nullopt;
}

std::unique_ptr<TemplateModel> LoadTransformer(const v1::HistogramState& state, std::size_t bins,
                                               std::string& error, const TrainingConfig& config,
                                               TransformerTrainer* trainer) {
  const v1::TransformerTemplateState& ts = state.transformer();
  const auto n = static_cast<std::size_t>(ts.pending_runs_size());
  if (bins == 0 || static_cast<std::size_t>(ts.pending_x_size()) != n * bins ||
      static_cast<std::size_t>(ts.pending_integral_size()) != n) {
    error = "transformer pending runs do not match its axes";
    return nullptr;
  }
  TransformerOptions options;
  options.bins = bins;
  options.threads = config.threads_per_worker;
  auto trained = std::make_shared<TransformerModel>(options);
  try {
    std::istringstream bytes(ts.model());
    trained->Load(bytes);
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;
  }
  auto model = std::make_unique<DeferredTransformer>(std::move(trained));
  TransformerSlot& slot = *model->slot();
  slot.histogram = state.name();
  for (std::size_t i = 0; i < n; ++i) {
    TransformerSlot::Pending p;
    p.run = ts.pending_runs(static_cast<int>(i));
    const auto* row = ts.pending_x().data() + i * bins;
    p.obs.x.assign(row, row + bins);
    p.obs.integral = ts.pending_integral(static_cast<int>(i));
    if ((!slot.pending.empty() && p.run <= slot.pending.back().run) || p.obs.empty()) {
      error = "transformer pending runs out of order or empty";
      return nullptr;
    }
    slot.pending.push_back(std::move(p));
  }
  slot.pending_trimmed = ts.pending_trimmed();
  if (auto why = LoadRelearned(ts, bins, KeptRuns(*slot.trained), slot)) {
    error = *why;
    return nullptr;
  }
  if (trainer != nullptr) {
    trainer->Resume(*model);
  }
  return model;
}

}  // namespace

void RegisterTransformerPersistence(const TrainingConfig& config, TransformerTrainer* trainer) {
  ModelPersistence p;
  p.save = SaveTransformer;
  p.load = [config, trainer](const v1::HistogramState& state, std::size_t bins,
                             std::string& error) {
    return LoadTransformer(state, bins, error, config, trainer);
  };
  RegisterModelPersistence("transformer", std::move(p));
}

}  // namespace dinamo::daemon
