#pragma once

// The interface every template method offers (DINAMO-S, DINAMO-ML), so that scoring, labels,
// the journal and snapshots treat them alike. A model is owned by one thread at a time.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "dinamo/ewma_template.h"
#include "dinamo/observation.h"
#include "dinamo/score.h"

namespace dinamo {

// A final run of a template's journal (journalled_template.h) as a model that relearns, rather
// than replays, reads it: views into the journal, valid during the call only.
struct JournalledRun {
  std::int64_t run = 0;
  std::span<const double> counts;  // raw counts
  bool learned = false;            // the decision as it now stands
};

class TemplateModel {
 public:
  virtual ~TemplateModel() = default;

  // "ewma" or "transformer", as in the configuration.
  virtual std::string_view method() const = 0;
  virtual std::size_t bins() const = 0;

  // The template for run `run` (a time index: runs increase), before learning from it.
  virtual void Expect(std::int64_t run, Expectation& out) const = 0;

  // The same template in the listed bins only (mu, sigma_mu: one value per listed bin), for a
  // verdict's few largest pulls. By default through Expect.
  virtual void ExpectBins(std::int64_t run, std::span<const std::uint32_t> bins,
                          std::span<double> mu, std::span<double> sigma_mu) const;

  // Scores `obs` taken at run `run`; one pull per bin into `pulls`.
  virtual Score ScoreRun(std::int64_t run, const Observation& obs, std::span<double> pulls) const;

  // Learns from run `run`, accepted as good, after it was scored. Returns false when the
  // observation cannot teach (empty histogram).
  virtual bool Learn(std::int64_t run, const Observation& obs) = 0;

  // How many runs the template has learned from.
  virtual std::uint64_t learned_runs() const = 0;

  virtual std::unique_ptr<TemplateModel> Clone() const = 0;

  // How a late label reaches the model (JournalledTemplate::SetLabel). true: the journal keeps
  // the state from before its oldest run and replays every journalled run from it, which gives
  // exactly the on-time template; right when learning is cheap and deterministic (DINAMO-S).
  // false: the journal keeps no base state and each changed decision is handed to Relearn,
  // for a model whose learning is too costly to repeat run by run (the daemon's transformer).
  virtual bool ReplaysJournal() const { return true; }

  // Called (models with ReplaysJournal() false only) when a late label changed whether run
  // `changed` is learned; `journal` is the whole journal, oldest first, with every decision as
  // it now stands. Returns why the model cannot apply it (then it has changed nothing).
  virtual std::optional<std::string> Relearn(std::span<const JournalledRun> journal,
                                             std::int64_t changed);
};

// DINAMO-S behind the common interface.
class EwmaModel final : public TemplateModel {
 public:
  EwmaModel(std::size_t bins, double alpha) : state_(InitialEwmaState(bins, alpha)) {}
  explicit EwmaModel(EwmaState state) : state_(std::move(state)) {}

  std::string_view method() const override { return "ewma"; }
  std::size_t bins() const override { return state_.bins(); }
  void Expect(std::int64_t, Expectation& out) const override { ExpectationOf(state_, out); }
  void ExpectBins(std::int64_t, std::span<const std::uint32_t> bins, std::span<double> mu,
                  std::span<double> sigma_mu) const override {
    ExpectationAt(state_, bins, mu, sigma_mu);
  }
  Score ScoreRun(std::int64_t, const Observation& obs, std::span<double> pulls) const override {
    return ScoreEwma(state_, obs, pulls);
  }
  bool Learn(std::int64_t, const Observation& obs) override { return LearnEwma(state_, obs); }
  std::uint64_t learned_runs() const override { return state_.learned_runs; }
  std::unique_ptr<TemplateModel> Clone() const override {
    return std::make_unique<EwmaModel>(state_);
  }

  const EwmaState& state() const { return state_; }
  EwmaState& mutable_state() { return state_; }

 private:
  EwmaState state_;
};

}  // namespace dinamo
