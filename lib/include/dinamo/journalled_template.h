#pragma once

// A template that remembers its last final runs, so that labels may arrive late (DESIGN.md
// section 4). For a model that replays (TemplateModel::ReplaysJournal, DINAMO-S) it keeps the
// state from before the oldest remembered run; a label for a run still in the journal is applied
// by replaying the journal from that state, which leaves the template exactly as it would be had
// the label been known on time. A model that does not replay keeps no base state: a label that
// changes a run's decision changes that decision only (the other runs keep theirs, nothing is
// scored again) and the model is told through TemplateModel::Relearn.

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "dinamo/run_table.h"
#include "dinamo/score.h"
#include "dinamo/template_model.h"

namespace dinamo {

// Who decides, for a run without a label, whether the template learns from it.
enum class AutoAccept {
  kBelowThreshold,  // a run that is not anomalous is accepted
  kNever,           // only explicit good labels teach
  kAlways,          // every run teaches unless labelled bad
};

struct LearningPolicy {
  AutoAccept auto_accept = AutoAccept::kBelowThreshold;
  double threshold = 1.0;
  // Until the template has learned this many runs, unlabelled runs are accepted under
  // kBelowThreshold too: a template that has not learned anything yet flags everything, and
  // would otherwise never start learning.
  std::uint64_t warmup_runs = 0;
  // Runs with fewer entries never teach (too little to say anything about the shape).
  double min_entries = 0.0;
};

// Whether a final run teaches: its label if it has one, the policy otherwise.
bool Accepts(const LearningPolicy& policy, Label label, const Score& score, double integral,
             std::uint64_t learned_runs);

struct JournalEntry {
  std::int64_t run = 0;
  Label label = Label::kUnknown;
  std::vector<double> counts;  // raw counts: normalising again is exact and halves the memory
  bool learned = false;        // the decision as it stands now
};

class JournalledTemplate {
 public:
  // `journal_runs` = 0 keeps no journal: every late label is then refused.
  JournalledTemplate(std::unique_ptr<TemplateModel> model, std::size_t journal_runs);

  // Restores a template from its parts (a snapshot): the state before the oldest entry, the
  // journal, and the current state.
  JournalledTemplate(std::unique_ptr<TemplateModel> base, std::unique_ptr<TemplateModel> current,
                     std::deque<JournalEntry> journal, std::size_t journal_runs);

  JournalledTemplate(const JournalledTemplate& other);
  JournalledTemplate& operator=(const JournalledTemplate& other);
  JournalledTemplate(JournalledTemplate&&) = default;
  JournalledTemplate& operator=(JournalledTemplate&&) = default;

  struct Outcome {
    Score score;
    bool learned = false;
  };

  // Scores a final run, journals it, and learns from it if the label or the policy accepts it.
  // `obs` must be Normalise(counts); `pulls` receives one pull per bin.
  Outcome ScoreFinal(std::int64_t run, std::span<const double> counts, const Observation& obs,
                     Label label, const LearningPolicy& policy, std::span<double> pulls);

  // The second half of ScoreFinal, for a caller that scored the run itself with model() (to
  // read the template before it learns): journals the run and learns from it if accepted.
  Outcome LearnFinal(std::int64_t run, std::span<const double> counts, const Observation& obs,
                     Label label, const LearningPolicy& policy, const Score& score);

  // Applies a label that arrived late. Returns why it was refused (run older than the journal,
  // run never seen, label not good or bad), or nothing when it was applied. Giving a run the
  // label it already has changes nothing; a different label replaces the earlier one. A model
  // that refuses to relearn leaves the label and the decision as they were.
  std::optional<std::string> SetLabel(std::int64_t run, Label label, const LearningPolicy& policy);

  const TemplateModel& model() const { return *model_; }
  TemplateModel& mutable_model() { return *model_; }
  const TemplateModel* base() const { return base_.get(); }
  const std::deque<JournalEntry>& journal() const;
  std::size_t journal_runs() const { return journal_runs_; }

  // Changes the journal length (a reload); entries beyond the new length are folded into the
  // base state.
  void set_journal_runs(std::size_t journal_runs);

 private:
  // Learns the oldest entry into the base state and drops it; returns its counts buffer.
  std::vector<double> FoldOldest();
  void ReplayJournal(const LearningPolicy& policy);
  std::optional<std::string> Relearn(JournalEntry& entry, bool learned);
  bool KeepsBase() const { return journal_runs_ > 0 && model_->ReplaysJournal(); }

  // State before journal_.front(); null without journal or for a model that does not replay.
  std::unique_ptr<TemplateModel> base_;
  std::unique_ptr<TemplateModel> model_;  // current state
  // Built on the first journalled run: an empty std::deque already holds about 600 bytes, more
  // than a whole template without journal should cost.
  std::optional<std::deque<JournalEntry>> journal_;
  std::size_t journal_runs_;
};

}  // namespace dinamo
