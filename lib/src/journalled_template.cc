#include "dinamo/journalled_template.h"

#include <algorithm>
#include <cassert>
#include <numeric>

namespace dinamo {

bool Accepts(const LearningPolicy& policy, Label label, const Score& score, double integral,
             std::uint64_t learned_runs) {
  if (integral <= kEmptyIntegral || integral < policy.min_entries) return false;
  if (label != Label::kUnknown) return label == Label::kGood;

  switch (policy.auto_accept) {
    case AutoAccept::kNever:
      return false;
    case AutoAccept::kAlways:
      return true;
    case AutoAccept::kBelowThreshold:
      return learned_runs < policy.warmup_runs || !score.Anomalous(policy.threshold);
  }
  return false;
}

JournalledTemplate::JournalledTemplate(std::unique_ptr<TemplateModel> model,
                                       std::size_t journal_runs)
    : model_(std::move(model)), journal_runs_(journal_runs) {
  if (KeepsBase()) base_ = model_->Clone();
}

JournalledTemplate::JournalledTemplate(std::unique_ptr<TemplateModel> base,
                                       std::unique_ptr<TemplateModel> current,
                                       std::deque<JournalEntry> journal, std::size_t journal_runs)
    : base_(std::move(base)),
      model_(std::move(current)),
      journal_runs_(journal_runs) {
  if (!journal.empty()) journal_ = std::move(journal);
  set_journal_runs(journal_runs);
}

JournalledTemplate::JournalledTemplate(const JournalledTemplate& other)
    : base_(other.base_ ? other.base_->Clone() : nullptr),
      model_(other.model_->Clone()),
      journal_(other.journal_),
      journal_runs_(other.journal_runs_) {}

JournalledTemplate& JournalledTemplate::operator=(const JournalledTemplate& other) {
  if (this != &other) *this = JournalledTemplate(other);
  return *this;
}

JournalledTemplate::Outcome JournalledTemplate::ScoreFinal(std::int64_t run,
                                                           std::span<const double> counts,
                                                           const Observation& obs, Label label,
                                                           const LearningPolicy& policy,
                                                           std::span<double> pulls) {
  return LearnFinal(run, counts, obs, label, policy, model_->ScoreRun(run, obs, pulls));
}

JournalledTemplate::Outcome JournalledTemplate::LearnFinal(std::int64_t run,
                                                           std::span<const double> counts,
                                                           const Observation& obs, Label label,
                                                           const LearningPolicy& policy,
                                                           const Score& score) {
  Outcome out;
  out.score = score;
  out.learned = Accepts(policy, label, out.score, obs.integral, model_->learned_runs());
  if (out.learned) out.learned = model_->Learn(run, obs);

  if (journal_runs_ == 0) return out;
  // A full journal folds its oldest entry first and hands its buffer to the new one: the base
  // state does not depend on the new run, and the hot path allocates nothing.
  std::vector<double> buffer;
  if (!journal_) journal_.emplace();
  while (journal_->size() >= journal_runs_) buffer = FoldOldest();
  buffer.assign(counts.begin(), counts.end());
  journal_->push_back({run, label, std::move(buffer), out.learned});
  return out;
}

const std::deque<JournalEntry>& JournalledTemplate::journal() const {
  static const std::deque<JournalEntry> kNone;
  return journal_ ? *journal_ : kNone;
}

std::vector<double> JournalledTemplate::FoldOldest() {
  JournalEntry& oldest = journal_->front();
  if (oldest.learned && base_) {
    thread_local Observation obs;  // reused: no allocation per fold, no memory per template
    Normalise(oldest.counts, obs);
    base_->Learn(oldest.run, obs);
  }
  std::vector<double> counts = std::move(oldest.counts);
  journal_->pop_front();
  return counts;
}

std::optional<std::string> JournalledTemplate::SetLabel(std::int64_t run, Label label,
                                                        const LearningPolicy& policy) {
  if (label == Label::kUnknown) return "label must be good or bad";
  if (journal().empty()) {
    return journal_runs_ == 0 ? "this template keeps no journal (journal_runs is 0)"
                              : "no final run has been journalled yet";
  }
  if (run < journal_->front().run) {
    return "run " + std::to_string(run) + " is older than the journal (oldest run kept " +
           std::to_string(journal_->front().run) + ", journal_runs " +
           std::to_string(journal_runs_) + ")";
  }
  auto entry = std::find_if(journal_->begin(), journal_->end(),
                            [run](const JournalEntry& e) { return e.run == run; });
  if (entry == journal_->end()) {
    return "run " + std::to_string(run) + " was never seen as a final run of this histogram";
  }

  if (entry->label == label) return std::nullopt;
  const Label before = entry->label;
  entry->label = label;

  // A known label decides by itself; when it confirms what was done, nothing downstream moves.
  const double integral = std::accumulate(entry->counts.begin(), entry->counts.end(), 0.0);
  const bool teaches = Accepts(policy, label, Score{}, integral, 0);
  if (teaches == entry->learned) return std::nullopt;
  if (base_) {
    ReplayJournal(policy);
    return std::nullopt;
  }
  // Bounded instead of exact: only this run's decision changes, the model relearns it once.
  if (auto why = Relearn(*entry, teaches)) {
    entry->label = before;
    return why;
  }
  return std::nullopt;
}

std::optional<std::string> JournalledTemplate::Relearn(JournalEntry& entry, bool learned) {
  entry.learned = learned;
  std::vector<JournalledRun> runs;
  runs.reserve(journal().size());
  for (const JournalEntry& e : journal()) runs.push_back({e.run, e.counts, e.learned});
  auto why = model_->Relearn(runs, entry.run);
  if (why) entry.learned = !learned;
  return why;
}

void JournalledTemplate::ReplayJournal(const LearningPolicy& policy) {
  // The same operations in the same order as when the runs arrived: the result is bit-exact.
  model_ = base_->Clone();
  Observation obs;
  std::vector<double> pulls;
  for (JournalEntry& e : *journal_) {
    Normalise(e.counts, obs);
    pulls.resize(obs.bins());
    const Score score = model_->ScoreRun(e.run, obs, pulls);
    e.learned = Accepts(policy, e.label, score, obs.integral, model_->learned_runs());
    if (e.learned) e.learned = model_->Learn(e.run, obs);
  }
}

void JournalledTemplate::set_journal_runs(std::size_t journal_runs) {
  journal_runs_ = journal_runs;
  if (journal_runs_ == 0) journal_.reset();
  if (!KeepsBase()) {
    base_.reset();
  } else if (!base_) {
    base_ = model_->Clone();
  }
  while (journal_ && journal_->size() > journal_runs_) FoldOldest();
}

}  // namespace dinamo
