#include "dinamo/template_model.h"

namespace dinamo {

Score TemplateModel::ScoreRun(std::int64_t run, const Observation& obs,
                              std::span<double> pulls) const {
  Expectation expected;
  Expect(run, expected);
  return ScoreObservation(obs, expected, pulls);
}

void TemplateModel::ExpectBins(std::int64_t run, std::span<const std::uint32_t> bins,
                               std::span<double> mu, std::span<double> sigma_mu) const {
  thread_local Expectation expected;  // a model's Expect may be a forward pass: one per call
  Expect(run, expected);
  for (std::size_t i = 0; i < bins.size(); ++i) {
    mu[i] = expected.mu[bins[i]];
    sigma_mu[i] = expected.sigma_mu[bins[i]];
  }
}

std::optional<std::string> TemplateModel::Relearn(std::span<const JournalledRun>, std::int64_t) {
  return "method " + std::string(method()) + " applies late labels by replaying its journal";
}

}  // namespace dinamo
