#include "dinamo/template_model.h"

namespace dinamo {

Score TemplateModel::ScoreRun(std::int64_t run, const Observation& obs,
                              std::span<double> pulls) const {
  Expectation expected;
  Expect(run, expected);
  return ScoreObservation(obs, expected, pulls);
}

std::optional<std::string> TemplateModel::Relearn(std::span<const JournalledRun>, std::int64_t) {
  return "method " + std::string(method()) + " applies late labels by replaying its journal";
}

}  // namespace dinamo
