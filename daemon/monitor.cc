#include "monitor.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include <spdlog/spdlog.h>

#include "dinamo/score.h"
#include <fnmatch.h>

namespace dinamo::daemon {
namespace {

constexpr std::array<std::string_view, 17> kReasons = {
    "frame_count",       "oversized",        "empty_body",     "malformed",    "empty_name",
    "topic_mismatch",    "run_unset",        "no_counts",      "nan_count",    "infinite_count",
    "negative_count",    "bad_axes",         "shape_mismatch", "run_repeated", "run_out_of_order",
    "run_already_final", "transport_dropped"};

std::span<const double> CountsOf(const v1::Histogram& h) {
  return {h.counts().data(), static_cast<std::size_t>(h.counts_size())};
}

Rejection Refuse(std::string reason, std::string detail, std::string histogram) {
  return Rejection{std::move(reason), std::move(detail), std::move(histogram)};
}

// The reason label for counts that CheckCounts refused.
std::string CountsReason(const v1::Histogram& h) {
  if (h.counts().empty()) {
    return "no_counts";
  }
  for (double c : h.counts()) {
    if (std::isnan(c)) {
      return "nan_count";
    }
    if (std::isinf(c)) {
      return "infinite_count";
    }
    if (c < 0.0) {
      return "negative_count";
    }
  }
  return "bad_counts";
}

// The binning as the template keeps it: the message's axes, or one plain axis when it sent none.
std::vector<v1::Axis> ShapeOf(const v1::Histogram& h) {
  std::vector<v1::Axis> axes(h.axes().begin(), h.axes().end());
  if (axes.empty()) {
    v1::Axis axis;
    axis.set_bins(static_cast<std::uint32_t>(h.counts_size()));
    axes.push_back(axis);
  }
  return axes;
}

// Whether the message has the binning a template keeps (ShapeOf), without building it.
bool SameBinning(const std::vector<v1::Axis>& kept, const v1::Histogram& h) {
  if (h.axes_size() == 0) {
    return kept.size() == 1 && kept[0].bins() == static_cast<std::uint32_t>(h.counts_size()) &&
           kept[0].low() == 0.0 && kept[0].high() == 0.0;
  }
  if (kept.size() != static_cast<std::size_t>(h.axes_size())) {
    return false;
  }
  for (std::size_t i = 0; i < kept.size(); ++i) {
    const v1::Axis& a = h.axes(static_cast<int>(i));
    if (kept[i].bins() != a.bins() || kept[i].low() != a.low() || kept[i].high() != a.high()) {
      return false;
    }
  }
  return true;
}

std::unique_ptr<TemplateModel> MakeModel(std::size_t bins, const HistogramSettings& s) {
  if (s.method != "ewma") {
    if (const ModelFactory* factory = FindModelFactory(s.method)) {
      return (*factory)(bins, s);
    }
  }
  return std::make_unique<EwmaModel>(bins, s.alpha);
}

std::map<std::string, ModelPersistence>& Persistences() {
  static std::map<std::string, ModelPersistence> persistences;
  return persistences;
}

const ModelPersistence* FindPersistence(std::string_view method) {
  const auto it = Persistences().find(std::string(method));
  return it == Persistences().end() ? nullptr : &it->second;
}

std::unique_ptr<JournalledTemplate> MakeTemplate(std::size_t bins, const HistogramSettings& s) {
  return std::make_unique<JournalledTemplate>(MakeModel(bins, s), s.journal_runs);
}

Label LabelOf(v1::Label label) {
  switch (label) {
    case v1::LABEL_GOOD:
      return Label::kGood;
    case v1::LABEL_BAD:
      return Label::kBad;
    default:
      return Label::kUnknown;
  }
}

v1::Label ProtoLabel(Label label) {
  return label == Label::kGood  ? v1::LABEL_GOOD
         : label == Label::kBad ? v1::LABEL_BAD
                                : v1::LABEL_UNSPECIFIED;
}

const char* LabelName(Label label) {
  return label == Label::kGood ? "good" : label == Label::kBad ? "bad" : "unknown";
}

LearningPolicy PolicyOf(const HistogramSettings& s) {
  LearningPolicy p;
  p.auto_accept = s.auto_accept;
  p.threshold = s.threshold;
  p.warmup_runs = s.warmup_runs;
  p.min_entries = s.min_entries;
  return p;
}

// The library's enumerations are the proto's shifted by one (proto 0 is UNSPECIFIED); events
// share their numbers.
v1::AlarmState ProtoState(AlarmState s) {
  return static_cast<v1::AlarmState>(static_cast<int>(s) + 1);
}
v1::Severity ProtoSeverity(Severity s) {
  return static_cast<v1::Severity>(static_cast<int>(s) + 1);
}
v1::AlarmEvent ProtoEvent(AlarmEvent e) { return static_cast<v1::AlarmEvent>(static_cast<int>(e)); }

Severity LibSeverity(v1::Severity s) {
  return s == v1::SEVERITY_UNSPECIFIED ? Severity::kNone
                                       : static_cast<Severity>(static_cast<int>(s) - 1);
}

// A new alpha (a reload) applies to the current template and to the journal's base, so that a
// replay after a late label goes on with it.
void SetAlpha(std::unique_ptr<JournalledTemplate>& t, double alpha) {
  const auto* current = dynamic_cast<const EwmaModel*>(&t->model());
  if (current == nullptr || current->state().alpha == alpha) {
    return;
  }
  auto with_alpha = [alpha](const TemplateModel& m) {
    std::unique_ptr<TemplateModel> copy = m.Clone();
    if (auto* ewma = dynamic_cast<EwmaModel*>(copy.get())) {
      ewma->mutable_state().alpha = alpha;
    }
    return copy;
  };
  std::unique_ptr<TemplateModel> base = t->base() ? with_alpha(*t->base()) : nullptr;
  t = std::make_unique<JournalledTemplate>(std::move(base), with_alpha(t->model()), t->journal(),
                                           t->journal_runs());
}

void SaveEwma(const EwmaState& st, v1::EwmaTemplateState& es) {
  es.set_alpha(st.alpha);
  es.set_integral(st.integral);
  es.set_learned_runs(st.learned_runs);
  es.mutable_weight()->Add(st.weight.begin(), st.weight.end());
  es.mutable_sum_mu()->Add(st.sum_mu.begin(), st.sum_mu.end());
  es.mutable_sum_sigma()->Add(st.sum_sigma.begin(), st.sum_sigma.end());
}

// The sums of a snapshot, or why they cannot be used for a template of `bins` bins.
std::optional<std::string> LoadEwma(const v1::EwmaTemplateState& es, std::uint64_t bins,
                                    EwmaState& st) {
  if (bins == 0 || static_cast<std::uint64_t>(es.weight_size()) != bins ||
      es.sum_mu_size() != es.weight_size() || es.sum_sigma_size() != es.weight_size()) {
    return "template sums do not match its axes";
  }
  if (!(es.alpha() >= 0.0 && es.alpha() <= 1.0)) {
    return "alpha out of [0, 1]";
  }
  st.alpha = es.alpha();
  st.integral = es.integral();
  st.learned_runs = es.learned_runs();
  st.weight.assign(es.weight().begin(), es.weight().end());
  st.sum_mu.assign(es.sum_mu().begin(), es.sum_mu().end());
  st.sum_sigma.assign(es.sum_sigma().begin(), es.sum_sigma().end());
  return std::nullopt;
}

void SaveAlarm(const AlarmRecord& a, v1::AlarmRecord& out) {
  out.set_state(ProtoState(a.state));
  out.set_severity(ProtoSeverity(a.severity));
  out.set_run(a.run);
  out.set_raised_unix_ns(a.raised_unix_ns);
  out.set_consecutive_anomalous(a.consecutive_anomalous);
  out.set_shelved_until_unix_s(a.shelved_until_unix_s);
  out.set_consecutive_normal(a.consecutive_normal);
  out.set_active(a.active);
}

std::optional<std::string> LoadAlarm(const v1::AlarmRecord& in, AlarmRecord& a) {
  const int state = static_cast<int>(in.state());
  const int severity = static_cast<int>(in.severity());
  if (state < 0 || state > static_cast<int>(AlarmState::kDisabled) + 1 || severity < 0 ||
      severity > static_cast<int>(Severity::kInvalid) + 1) {
    return "alarm state or severity out of range";
  }
  a.state = in.state() == v1::ALARM_STATE_UNSPECIFIED ? AlarmState::kNormal
                                                      : static_cast<AlarmState>(state - 1);
  a.severity = LibSeverity(in.severity());
  a.run = in.run();
  a.raised_unix_ns = in.raised_unix_ns();
  a.consecutive_anomalous = in.consecutive_anomalous();
  a.shelved_until_unix_s = in.shelved_until_unix_s();
  a.consecutive_normal = in.consecutive_normal();
  // Snapshots from before the lifecycle kept no condition: an active alarm had it holding.
  a.active =
      in.active() || a.state == AlarmState::kUnacknowledged || a.state == AlarmState::kAcknowledged;
  return std::nullopt;
}

}  // namespace

struct Monitor::Track {
  std::string name;
  std::vector<v1::Axis> axes;
  std::unique_ptr<JournalledTemplate> tmpl;  // the model and the journal of its final runs
  std::uint64_t generation = 0;              // of the settings applied to the model
  const HistogramSettings* settings = nullptr;
  std::uint64_t last_final_run = 0;
  std::uint64_t last_run = 0;
  // Single precision: they are shown (get_template), never computed with; verdicts carry the
  // doubles. Half the memory of the largest thing a template keeps besides its sums.
  std::vector<float> last_pulls;
  AlarmRecord alarm;
  // The last change of the alarm, the verdict behind it and who made it (shifter actions).
  AlarmEvent alarm_event = AlarmEvent::kNone;
  std::unique_ptr<v1::Verdict> alarm_verdict;  // allocated by the first alarm change only
  Actor actor;
  // Run summaries: the last run this histogram's final was counted in, and whether it is one
  // of the last summarised run's histograms.
  std::uint64_t tallied_run = 0;
  bool in_previous_run = false;
};

void MonitorResult::Reset() {
  rejection.reset();
  reset_alarm.reset();
  unshelved_alarm.reset();
  verdict.reset();
  alarm.reset();
  summary.reset();
}

std::span<const std::string_view> RejectionReasons() { return kReasons; }

void RegisterModelPersistence(const std::string& method, ModelPersistence persistence) {
  Persistences()[method] = std::move(persistence);
}

Monitor::Monitor(SettingsResolver& settings) : settings_(settings) {}

Monitor::~Monitor() = default;

MonitorResult& Monitor::OnMessage(std::span<const std::string_view> frames,
                                  std::int64_t now_unix_ns) {
  MonitorResult& result = result_;
  result.Reset();
  auto topic = [&frames] { return frames.empty() ? std::string() : std::string(frames[0]); };
  if (frames.size() != 2) {
    result.rejection =
        Refuse("frame_count",
               "expected 2 frames (topic, body), got " + std::to_string(frames.size()), topic());
    return result;
  }
  const std::size_t size = frames[0].size() + frames[1].size();
  const std::size_t limit = settings_.config().input_max_message_bytes;
  if (size > limit) {
    result.rejection = Refuse(
        "oversized",
        std::to_string(size) + " bytes, more than input.max_message_bytes=" + std::to_string(limit),
        topic());
    return result;
  }
  if (frames[1].empty()) {
    result.rejection = Refuse("empty_body", "the body frame is empty", topic());
    return result;
  }
  parsed_.Clear();
  if (!parsed_.ParseFromArray(frames[1].data(), static_cast<int>(frames[1].size()))) {
    result.rejection = Refuse("malformed", "body is not a dinamo.v1.Histogram", topic());
    return result;
  }
  return OnHistogram(frames[0], parsed_, now_unix_ns);
}

std::optional<Rejection> Monitor::Check(std::string_view topic, const v1::Histogram& h,
                                        Track*& known) const {
  known = nullptr;
  const std::string& name = h.name();
  if (name.empty()) {
    return Refuse("empty_name", "the histogram has no name", std::string(topic));
  }
  if (const auto it = index_.find(name); it != index_.end()) {
    known = it->second;
  }
  if (topic != name) {
    return Refuse("topic_mismatch", "topic '" + std::string(topic) + "' differs from the name",
                  name);
  }
  if (h.run() == 0) {
    return Refuse("run_unset", "run 0 (unset)", name);
  }
  if (auto why = CheckCounts(CountsOf(h))) {
    return Refuse(CountsReason(h), *why, name);
  }
  std::uint64_t product = 1;
  for (const v1::Axis& axis : h.axes()) {
    if (axis.bins() == 0) {
      return Refuse("bad_axes", "an axis has 0 bins", name);
    }
    product *= axis.bins();
    if (product > static_cast<std::uint64_t>(h.counts_size())) {
      break;
    }
  }
  if (h.axes_size() > 0 && product != static_cast<std::uint64_t>(h.counts_size())) {
    return Refuse("shape_mismatch",
                  std::to_string(h.counts_size()) + " counts for axes of " +
                      std::to_string(product) + (product > 1 ? " bins or more" : " bins"),
                  name);
  }

  if (known == nullptr) {
    return std::nullopt;
  }
  const std::uint64_t last_final = known->last_final_run;
  if (h.final() && h.run() <= last_final) {
    return Refuse(
        h.run() == last_final ? "run_repeated" : "run_out_of_order",
        "final run " + std::to_string(h.run()) + " after final run " + std::to_string(last_final),
        name);
  }
  if (!h.final() && h.run() <= last_final) {
    return Refuse("run_already_final",
                  "non-final run " + std::to_string(h.run()) + ", run " +
                      std::to_string(last_final) + " is already final",
                  name);
  }
  return std::nullopt;
}

Monitor::Track& Monitor::TrackFor(const v1::Histogram& h, Track* known,
                                  std::int64_t now_unix_ns, MonitorResult& result) {
  if (known == nullptr) {
    std::vector<v1::Axis> shape = ShapeOf(h);
    auto track = std::make_unique<Track>();
    track->name = h.name();
    track->axes = std::move(shape);
    track->settings = &settings_.For(h.name());
    track->generation = generation_;
    track->tmpl = MakeTemplate(h.counts_size(), *track->settings);
    spdlog::debug("template created histogram={} bins={} method={} journal_runs={}", h.name(),
                  h.counts_size(), track->tmpl->model().method(), track->settings->journal_runs);
    const auto inserted = tracks_.emplace(h.name(), std::move(track)).first;
    index_.emplace(inserted->first, inserted->second.get());
    return *inserted->second;
  }

  Track& track = *known;
  ApplySettings(track);
  if (!SameBinning(track.axes, h)) {
    spdlog::info("template reset histogram={} reason=binning_changed bins={}->{}", h.name(),
                 track.tmpl->model().bins(), h.counts_size());
    track.axes = ShapeOf(h);
    track.tmpl = MakeTemplate(h.counts_size(), *track.settings);
    track.last_pulls.clear();
    dinamo::Rebaseline(track.alarm);
    track.alarm.run = h.run();
    track.alarm_event = AlarmEvent::kRebaselined;
    track.alarm_verdict.reset();
    track.actor = Actor{"", "", "binning changed: template reset"};
    FillAlarm(track, now_unix_ns, result.reset_alarm.emplace());
    result.reset_alarm->set_severity(v1::SEVERITY_UNDEFINED);  // a fresh template cannot tell
  }
  return track;
}

void Monitor::ApplySettings(Track& track) {
  if (track.generation == generation_) {
    return;
  }
  track.settings = &settings_.For(track.name);
  track.generation = generation_;
  if (track.settings->method != track.tmpl->model().method()) {
    spdlog::warn(
        "method change ignored histogram={} method={} configured={} "
        "(takes effect when the template is reset)",
        track.name, track.tmpl->model().method(), track.settings->method);
  }
  SetAlpha(track.tmpl, track.settings->alpha);
  const std::size_t journal_runs = track.settings->journal_runs;
  if (track.tmpl->journal_runs() != journal_runs) {
    track.tmpl->set_journal_runs(journal_runs);
  }
}

void Monitor::FillPulls(v1::Verdict& verdict, const TemplateModel& model,
                        std::int64_t run) const {
  std::array<std::uint32_t, kVerdictPulls> top{};
  const std::size_t n = LargestPulls(pulls_, top);
  // The template before it learns from this run, in those bins only.
  std::array<double, kVerdictPulls> mu{};
  std::array<double, kVerdictPulls> sigma_mu{};
  model.ExpectBins(run, std::span(top).first(n), mu, sigma_mu);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t b = top[i];
    v1::Pull* pull = verdict.add_pulls();
    pull->set_bin(b);
    pull->set_pull(pulls_[b]);
    pull->set_observed(obs_.x[b]);
    pull->set_expected(mu[i]);
    pull->set_sigma(std::sqrt(obs_.var_x[b] + sigma_mu[i] * sigma_mu[i]));
  }
}

void Monitor::UpdateAlarm(Track& track, const v1::Verdict& verdict, std::int64_t now_unix_ns,
                          Reused<v1::Alarm>& out) {
  const HistogramSettings& s = *track.settings;
  const AlarmSettings delays{s.on_delay, s.off_delay};
  const AlarmEvent event =
      OnVerdict(track.alarm, LibSeverity(verdict.severity()), verdict.run(), now_unix_ns, delays);
  if (event == AlarmEvent::kNone) {
    return;
  }
  track.alarm_event = event;
  if (!track.alarm_verdict) {
    track.alarm_verdict = std::make_unique<v1::Verdict>();
  }
  *track.alarm_verdict = verdict;
  track.actor = Actor{};
  if (AlarmLineAllowed(now_unix_ns)) {
    spdlog::info("alarm {} histogram={} run={} state={} severity={} s={:.3f} threshold={}",
                 AlarmEventName(event), track.name, verdict.run(),
                 AlarmStateName(track.alarm.state), SeverityName(track.alarm.severity),
                 verdict.log_reduced_chi2(), verdict.threshold());
  }
  FillAlarm(track, now_unix_ns, out.emplace());
}

bool Monitor::AlarmLineAllowed(std::int64_t now_unix_ns) {
  FlushAlarmLog(now_unix_ns);
  if (alarm_lines_ < kAlarmLinesPerSecond) {
    ++alarm_lines_;
    return true;
  }
  ++alarm_lines_skipped_;
  return false;
}

void Monitor::FlushAlarmLog(std::int64_t now_unix_ns) {
  constexpr std::int64_t kSecondNs = 1'000'000'000;
  const std::int64_t second = now_unix_ns / kSecondNs;
  if (second == alarm_log_second_) {
    return;
  }
  if (alarm_lines_skipped_ > 0) {
    spdlog::info("alarm changes not logged={} (over {} per second; all are published)",
                 alarm_lines_skipped_, kAlarmLinesPerSecond);
  }
  alarm_log_second_ = second;
  alarm_lines_ = 0;
  alarm_lines_skipped_ = 0;
}

v1::Alarm Monitor::AlarmMessage(const Track& track, std::int64_t now_unix_ns) const {
  v1::Alarm alarm;
  FillAlarm(track, now_unix_ns, alarm);
  return alarm;
}

void Monitor::FillAlarm(const Track& track, std::int64_t now_unix_ns, v1::Alarm& alarm) const {
  const AlarmRecord& a = track.alarm;
  alarm.set_histogram(track.name);
  alarm.set_run(a.run);
  alarm.set_state(ProtoState(a.state));
  alarm.set_severity(ProtoSeverity(a.severity));
  if (track.alarm_verdict) {
    *alarm.mutable_verdict() = *track.alarm_verdict;
  }
  alarm.set_event(ProtoEvent(track.alarm_event));
  alarm.set_time_unix_ns(now_unix_ns);
  alarm.set_raised_unix_ns(a.raised_unix_ns);
  alarm.set_user(track.actor.user);
  alarm.set_host(track.actor.host);
  alarm.set_comment(track.actor.comment);
  alarm.set_shelved_until_unix_s(a.shelved_until_unix_s);
  alarm.set_consecutive_anomalous(a.consecutive_anomalous);
}

MonitorResult& Monitor::OnHistogram(std::string_view topic, const v1::Histogram& h,
                                    std::int64_t now_unix_ns) {
  MonitorResult& result = result_;
  result.Reset();
  Track* known = nullptr;
  if (auto rejection = Check(topic, h, known)) {
    // A known histogram whose final is refused counts as INVALID in its run's summary; its
    // template and alarm do not change (bad input never changes state).
    if (h.final() && h.run() > 0 && known != nullptr && rejection->reason.rfind("run_", 0) != 0 &&
        rejection->reason != "topic_mismatch") {
      result.summary = Tally(*known, h.run(), 0.0, v1::SEVERITY_INVALID, now_unix_ns);
    }
    result.rejection = std::move(rejection);
    return result;
  }

  Track& track = TrackFor(h, known, now_unix_ns, result);
  const HistogramSettings& s = *track.settings;
  JournalledTemplate& tmpl = *track.tmpl;
  const auto run = static_cast<std::int64_t>(h.run());
  if (dinamo::ExpireShelving(track.alarm, now_unix_ns) == AlarmEvent::kUnshelved) {
    track.alarm_event = AlarmEvent::kUnshelved;
    track.actor = Actor{"", "", "shelving expired"};
    spdlog::info("alarm UNSHELVED histogram={} reason=expired", track.name);
    FillAlarm(track, now_unix_ns, result.unshelved_alarm.emplace());
  }

  // Scored against the template before it learns from this run; the verdict's pulls read that
  // template too.
  Normalise(CountsOf(h), obs_);
  pulls_.resize(obs_.bins());
  const bool warmup = tmpl.model().learned_runs() < s.warmup_runs;
  const Score score = tmpl.model().ScoreRun(run, obs_, pulls_);
  v1::Verdict& v = result.verdict.emplace();
  FillPulls(v, tmpl.model(), run);

  // Only a final run is journalled and may teach; a partial one is scored and nothing else.
  bool learned = false;
  if (h.final()) {
    learned = tmpl.LearnFinal(run, CountsOf(h), obs_, LabelOf(h.label()), PolicyOf(s), score)
                  .learned;
    if (learned && learned_hook_) {
      learned_hook_(track.name, tmpl.mutable_model());
    }
  }

  const bool judgeable = !obs_.empty() && obs_.integral >= s.min_entries;
  const double warning = s.warning_threshold.value_or(s.threshold);
  v.set_histogram(h.name());
  v.set_run(h.run());
  v.set_chi2(score.chi2);
  v.set_log_reduced_chi2(score.log_reduced_chi2);
  v.set_threshold(s.threshold);
  v.set_anomalous(score.Anomalous(s.threshold));
  v.set_warmup(warmup);
  v.mutable_method()->assign(tmpl.model().method());
  v.set_time_unix_ns(now_unix_ns);
  v.set_histogram_time_unix_ns(h.time_unix_ns());
  v.set_final(h.final());
  // "Cannot tell" (warm-up, too few entries) is never reported as good or bad.
  v.set_severity(warmup || !judgeable
                     ? v1::SEVERITY_UNDEFINED
                     : ProtoSeverity(SeverityOf(score.log_reduced_chi2, s.threshold, warning)));
  v.set_histogram_sequence(h.sequence());
  v.set_integral(obs_.integral);
  v.set_bins(static_cast<std::uint32_t>(obs_.bins()));
  if (s.warning_threshold) {
    v.set_warning_threshold(*s.warning_threshold);
  }
  v.set_learned(learned);

  track.last_run = h.run();
  track.last_pulls.assign(pulls_.begin(), pulls_.end());
  if (h.final()) {
    track.last_final_run = h.run();
  }
  UpdateAlarm(track, v, now_unix_ns, result.alarm);
  if (h.final()) {
    result.summary = Tally(track, h.run(), score.log_reduced_chi2, v.severity(), now_unix_ns);
  }
  return result;
}

void Monitor::ConfigChanged() { ++generation_; }

std::optional<v1::TemplateView> Monitor::Template(const std::string& histogram) const {
  const auto it = tracks_.find(histogram);
  if (it == tracks_.end()) {
    return std::nullopt;
  }
  const Track& track = *it->second;
  const TemplateModel& model = track.tmpl->model();
  model.Expect(static_cast<std::int64_t>(track.last_run) + 1, expected_);
  v1::TemplateView view;
  view.set_histogram(track.name);
  view.set_method(std::string(model.method()));
  view.mutable_mu()->Add(expected_.mu.begin(), expected_.mu.end());
  view.mutable_sigma()->Add(expected_.sigma_mu.begin(), expected_.sigma_mu.end());
  view.set_integral(expected_.integral);
  view.set_last_run(track.last_run);
  view.mutable_last_pulls()->Add(track.last_pulls.begin(), track.last_pulls.end());
  view.set_learned_runs(model.learned_runs());
  for (const v1::Axis& axis : track.axes) {
    *view.add_axes() = axis;
  }
  view.set_last_final_run(track.last_final_run);
  return view;
}

std::uint32_t Monitor::alarms_active() const {
  std::uint32_t n = 0;
  for (const auto& [name, track] : tracks_) {
    n += IsActive(track->alarm);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Labels

CommandOutcome Monitor::SetLabel(const v1::SetLabel& request, const Actor& who) {
  CommandOutcome out;
  const Label label = LabelOf(request.label());
  const auto run = static_cast<std::int64_t>(request.run());
  if (label == Label::kUnknown) {
    out.refused = "label must be LABEL_GOOD or LABEL_BAD";
    return out;
  }
  if (request.run() == 0) {
    out.refused = "run 0 (unset)";
    return out;
  }

  // One histogram, or every histogram that still has the run in its journal.
  std::vector<Track*> targets;
  if (request.whole_run()) {
    for (auto& [name, track] : tracks_) {
      const auto& journal = track->tmpl->journal();
      if (std::any_of(journal.begin(), journal.end(),
                      [run](const JournalEntry& e) { return e.run == run; })) {
        targets.push_back(track.get());
      }
    }
    if (targets.empty()) {
      out.refused = "no histogram has run " + std::to_string(run) + " in its journal";
      return out;
    }
  } else {
    const auto it = tracks_.find(request.histogram());
    if (it == tracks_.end()) {
      out.refused = "unknown histogram '" + request.histogram() + "'";
      return out;
    }
    targets.push_back(it->second.get());
  }

  std::uint32_t changed = 0;
  for (Track* track : targets) {
    ApplySettings(*track);
    JournalledTemplate& tmpl = *track->tmpl;
    const auto& journal = tmpl.journal();
    const auto entry = std::find_if(journal.begin(), journal.end(),
                                    [run](const JournalEntry& e) { return e.run == run; });
    const Label before = entry == journal.end() ? Label::kUnknown : entry->label;
    const bool learned_before = entry != journal.end() && entry->learned;
    if (auto why = tmpl.SetLabel(run, label, PolicyOf(*track->settings))) {
      out.refused = "histogram '" + track->name + "': " + *why;
      return out;  // only the single-histogram form can get here: the journal holds the run
    }
    // The template learns differently now: a transformer queues its one training for it.
    if (learned_hook_ && entry != journal.end() && entry->learned != learned_before) {
      learned_hook_(track->name, tmpl.mutable_model());
    }
    ++out.affected;
    changed += before != label;
    if (before != Label::kUnknown && before != label) {
      spdlog::info(
          "label replaced histogram={} run={} old={} new={} user={} host={} comment=\"{}\"",
          track->name, run, LabelName(before), LabelName(label), who.user, who.host, who.comment);
    }
  }
  spdlog::info(
      "label applied histogram={} run={} label={} histograms={} changed={} user={} "
      "host={} comment=\"{}\"",
      request.whole_run() ? "*" : request.histogram(), run, LabelName(label), out.affected, changed,
      who.user, who.host, who.comment);
  out.detail = changed == 0 ? "no change (the label was already known)" : "";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Alarm actions

CommandOutcome Monitor::ApplyAlarmAction(const std::string& histogram, std::string_view what,
                                         AlarmAction action, std::int64_t until_unix_s,
                                         const Actor& who, std::int64_t now_unix_ns) {
  CommandOutcome out;
  const auto it = tracks_.find(histogram);
  if (it == tracks_.end()) {
    out.refused = "unknown histogram '" + histogram + "'";
    return out;
  }
  Track& track = *it->second;
  const ActionResult r = action(track.alarm, until_unix_s, now_unix_ns);
  if (r.refused) {
    out.refused = "histogram '" + histogram + "': " + *r.refused;
    return out;
  }
  if (r.event == AlarmEvent::kNone) {
    out.detail = "no change (already " + std::string(AlarmStateName(track.alarm.state)) + ")";
    return out;  // idempotent: nothing to publish
  }
  out.affected = 1;
  track.alarm_event = r.event;
  track.actor = who;
  spdlog::info("alarm {} histogram={} state={} user={} host={} comment=\"{}\"", what, histogram,
               AlarmStateName(track.alarm.state), who.user, who.host, who.comment);
  out.alarms.push_back(AlarmMessage(track, now_unix_ns));
  return out;
}

CommandOutcome Monitor::Acknowledge(const std::string& histogram, const Actor& who,
                                    std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "ACKNOWLEDGED",
      [](AlarmRecord& a, std::int64_t, std::int64_t) { return dinamo::Acknowledge(a); }, 0, who,
      now_unix_ns);
}

CommandOutcome Monitor::Shelve(const std::string& histogram, std::int64_t until_unix_s,
                               const Actor& who, std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "SHELVED",
      [](AlarmRecord& a, std::int64_t until, std::int64_t now) {
        return dinamo::Shelve(a, until, now);
      },
      until_unix_s, who, now_unix_ns);
}

CommandOutcome Monitor::Unshelve(const std::string& histogram, const Actor& who,
                                 std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "UNSHELVED",
      [](AlarmRecord& a, std::int64_t, std::int64_t) { return dinamo::Unshelve(a); }, 0, who,
      now_unix_ns);
}

CommandOutcome Monitor::Disable(const std::string& histogram, const Actor& who,
                                std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "DISABLED",
      [](AlarmRecord& a, std::int64_t, std::int64_t) { return dinamo::Disable(a); }, 0, who,
      now_unix_ns);
}

CommandOutcome Monitor::Enable(const std::string& histogram, const Actor& who,
                               std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "ENABLED",
      [](AlarmRecord& a, std::int64_t, std::int64_t) { return dinamo::Enable(a); }, 0, who,
      now_unix_ns);
}

CommandOutcome Monitor::Rebaseline(const std::string& pattern, const Actor& who,
                                   std::int64_t now_unix_ns) {
  CommandOutcome out;
  if (pattern.empty()) {
    out.refused = "pattern must not be empty (a glob on histogram names; '*' for all)";
    return out;
  }
  for (auto& [name, track] : tracks_) {
    if (fnmatch(pattern.c_str(), name.c_str(), 0) != 0) {
      continue;
    }
    ApplySettings(*track);
    track->tmpl = MakeTemplate(track->tmpl->model().bins(), *track->settings);
    track->last_pulls.clear();
    dinamo::Rebaseline(track->alarm);
    track->alarm_event = AlarmEvent::kRebaselined;
    track->alarm_verdict.reset();
    track->actor = who;
    out.alarms.push_back(AlarmMessage(*track, now_unix_ns));
    ++out.affected;
  }
  if (out.affected == 0) {
    out.refused = "no histogram matches '" + pattern + "'";
    return out;
  }
  spdlog::info(
      "template reset pattern=\"{}\" histograms={} reason=rebaseline user={} host={} "
      "comment=\"{}\"",
      pattern, out.affected, who.user, who.host, who.comment);
  return out;
}

v1::AlarmTable Monitor::Alarms(std::string_view prefix) const {
  v1::AlarmTable table;
  for (const auto& [name, track] : tracks_) {
    if (track->alarm.state != AlarmState::kNormal && name.starts_with(prefix)) {
      *table.add_alarms() = AlarmMessage(*track, 0);
    }
  }
  return table;
}

std::vector<v1::Alarm> Monitor::ExpireShelving(std::int64_t now_unix_ns) {
  std::vector<v1::Alarm> out;
  for (auto& [name, track] : tracks_) {
    if (dinamo::ExpireShelving(track->alarm, now_unix_ns) == AlarmEvent::kUnshelved) {
      track->alarm_event = AlarmEvent::kUnshelved;
      track->actor = Actor{"", "", "shelving expired"};
      spdlog::info("alarm UNSHELVED histogram={} reason=expired", name);
      out.push_back(AlarmMessage(*track, now_unix_ns));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Run summaries

std::optional<v1::RunSummary> Monitor::Tally(Track& track, std::uint64_t run, double s,
                                             v1::Severity severity, std::int64_t now_unix_ns) {
  // A histogram counts once per run, with what came first (a refused final is not overridden
  // by a scored one), and not at all in a run older than one it was counted in.
  if (run <= last_summarised_run_ || run <= track.tallied_run) {
    return std::nullopt;
  }
  track.tallied_run = run;
  RunTally& tally = tallies_[run];
  if (tally.histograms.empty()) {
    tally.first_final_unix_ns = now_unix_ns;
  }
  tally.histograms.push_back({&track, s, severity});
  tally.expected_seen += track.in_previous_run;
  if (previous_run_.empty() || tally.expected_seen < previous_run_.size()) {
    return std::nullopt;
  }
  return Summarise(run, tally, now_unix_ns);
}

std::vector<v1::RunSummary> Monitor::DueSummaries(std::int64_t now_unix_ns, double after_s) {
  std::vector<v1::RunSummary> out;
  const auto after_ns = static_cast<std::int64_t>(after_s * 1e9);
  while (!tallies_.empty()) {
    const auto& [run, tally] = *tallies_.begin();
    if (now_unix_ns - tally.first_final_unix_ns < after_ns) {
      break;
    }
    out.push_back(Summarise(run, tally, now_unix_ns));
  }
  return out;
}

v1::RunSummary Monitor::Summarise(std::uint64_t run, const RunTally& tally,
                                  std::int64_t now_unix_ns) {
  v1::RunSummary summary;
  summary.set_run(run);
  summary.set_histograms(static_cast<std::uint32_t>(tally.histograms.size()));
  summary.set_time_unix_ns(now_unix_ns);
  std::vector<const TallyEntry*> scored;
  for (Track* track : previous_run_) {
    track->in_previous_run = false;
  }
  previous_run_.clear();
  for (const TallyEntry& entry : tally.histograms) {
    entry.track->in_previous_run = true;
    previous_run_.push_back(entry.track);
    switch (entry.severity) {
      case v1::SEVERITY_MINOR:
        summary.set_minor(summary.minor() + 1);
        break;
      case v1::SEVERITY_MAJOR:
        summary.set_major(summary.major() + 1);
        break;
      case v1::SEVERITY_UNDEFINED:
        summary.set_undefined(summary.undefined() + 1);
        break;
      case v1::SEVERITY_INVALID:
        summary.set_invalid(summary.invalid() + 1);
        break;
      default:
        summary.set_none(summary.none() + 1);
        break;
    }
    // The worst are those judged: "cannot tell" and refused input are counted, not ranked.
    if (entry.severity != v1::SEVERITY_UNDEFINED && entry.severity != v1::SEVERITY_INVALID) {
      scored.push_back(&entry);
    }
  }
  const std::size_t n = std::min(kSummaryWorst, scored.size());
  std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(n), scored.end(),
                    [](const TallyEntry* a, const TallyEntry* b) {
                      return a->s > b->s || (a->s == b->s && a->track->name < b->track->name);
                    });
  for (std::size_t i = 0; i < n; ++i) {
    v1::RunSummary::Worst* w = summary.add_worst();
    w->set_histogram(scored[i]->track->name);
    w->set_log_reduced_chi2(scored[i]->s);
    w->set_severity(scored[i]->severity);
  }
  // Runs before this one that are still open are summarised by the timer; later finals of
  // this run or earlier ones no longer count.
  last_summarised_run_ = std::max(last_summarised_run_, run);
  tallies_.erase(tallies_.begin(), tallies_.upper_bound(run));
  for (auto& [later, pending] : tallies_) {
    pending.expected_seen = 0;
    for (const TallyEntry& entry : pending.histograms) {
      pending.expected_seen += entry.track->in_previous_run;
    }
  }
  return summary;
}

// ---------------------------------------------------------------------------------------------
// Snapshots

void Monitor::SaveTo(v1::Snapshot& snapshot) const {
  for (const auto& [name, track] : tracks_) {
    const JournalledTemplate& tmpl = *track->tmpl;
    const auto* ewma = dynamic_cast<const EwmaModel*>(&tmpl.model());
    const ModelPersistence* other = ewma ? nullptr : FindPersistence(tmpl.model().method());
    if (ewma == nullptr && other == nullptr) {
      spdlog::warn("snapshot skips histogram={} method={} (no persistable state)", name,
                   tmpl.model().method());
      continue;
    }
    v1::HistogramState* hs = snapshot.add_histograms();
    hs->set_name(name);
    for (const v1::Axis& axis : track->axes) {
      *hs->add_axes() = axis;
    }
    hs->set_method(std::string(tmpl.model().method()));
    if (ewma != nullptr) {
      SaveEwma(ewma->state(), *hs->mutable_ewma());
    } else {
      other->save(tmpl.model(), *hs);
    }
    hs->set_last_final_run(track->last_final_run);
    hs->set_last_run(track->last_run);
    hs->mutable_last_pulls_single()->Add(track->last_pulls.begin(), track->last_pulls.end());

    v1::AlarmRecord* alarm = hs->mutable_alarm();
    SaveAlarm(track->alarm, *alarm);
    alarm->set_event(ProtoEvent(track->alarm_event));
    if (track->alarm_verdict) {
      *alarm->mutable_verdict() = *track->alarm_verdict;
    }
    alarm->set_user(track->actor.user);
    alarm->set_host(track->actor.host);
    alarm->set_comment(track->actor.comment);

    if (const auto* base = dynamic_cast<const EwmaModel*>(tmpl.base())) {
      SaveEwma(base->state(), *hs->mutable_journal_base());
    }
    for (const JournalEntry& e : tmpl.journal()) {
      v1::JournalEntry* je = hs->add_journal();
      je->set_run(static_cast<std::uint64_t>(e.run));
      je->set_label(ProtoLabel(e.label));
      je->mutable_counts()->Add(e.counts.begin(), e.counts.end());
      je->set_learned(e.learned);
    }
  }
}

std::optional<std::string> Monitor::RestoreFrom(const v1::Snapshot& snapshot) {
  std::map<std::string, std::unique_ptr<Track>, std::less<>> tracks;
  for (const v1::HistogramState& hs : snapshot.histograms()) {
    const std::string where = "histogram '" + hs.name() + "': ";
    if (hs.name().empty() || tracks.contains(hs.name())) {
      return where + "empty or repeated name";
    }
    const ModelPersistence* other = hs.method() == "ewma" ? nullptr : FindPersistence(hs.method());
    if (hs.method() != "ewma" && other == nullptr) {
      return where + "method '" + hs.method() + "' cannot be restored";
    }
    std::uint64_t bins = 1;
    for (const v1::Axis& axis : hs.axes()) {
      bins *= axis.bins();
    }
    if (hs.axes().empty()) {
      bins = 0;
    }
    std::unique_ptr<TemplateModel> current;
    if (other != nullptr) {
      std::string error;
      current = other->load(hs, bins, error);
      if (!current) {
        return where + error;
      }
    } else {
      EwmaState st;
      if (auto why = LoadEwma(hs.ewma(), bins, st)) {
        return where + *why;
      }
      current = std::make_unique<EwmaModel>(std::move(st));
    }

    // The journal: its base state, then runs in increasing order up to the last final run.
    std::unique_ptr<TemplateModel> base;
    if (hs.has_journal_base()) {
      EwmaState st;
      if (auto why = LoadEwma(hs.journal_base(), bins, st)) {
        return where + "journal base: " + *why;
      }
      base = std::make_unique<EwmaModel>(std::move(st));
    } else if (hs.journal_size() > 0 && current->ReplaysJournal()) {
      return where + "journal without its base state";
    }
    std::deque<JournalEntry> journal;
    for (const v1::JournalEntry& je : hs.journal()) {
      const auto run = static_cast<std::int64_t>(je.run());
      if (je.run() == 0 || je.run() > hs.last_final_run() ||
          (!journal.empty() && run <= journal.back().run)) {
        return where + "journal runs out of order";
      }
      if (static_cast<std::uint64_t>(je.counts_size()) != bins) {
        return where + "journal run " + std::to_string(run) + " has the wrong number of counts";
      }
      journal.push_back({run, LabelOf(je.label()),
                         std::vector<double>(je.counts().begin(), je.counts().end()),
                         je.learned()});
    }

    auto track = std::make_unique<Track>();
    track->name = hs.name();
    track->axes.assign(hs.axes().begin(), hs.axes().end());
    track->generation = 0;  // settings are resolved (and alpha applied) on the next message
    track->settings = &settings_.For(hs.name());
    // A journal longer than journal_runs now is folded into its base, as it would have been.
    const std::size_t journal_runs = track->settings->journal_runs;
    track->tmpl = std::make_unique<JournalledTemplate>(std::move(base), std::move(current),
                                                       std::move(journal), journal_runs);
    track->last_final_run = hs.last_final_run();
    track->last_run = hs.last_run();
    if (hs.last_pulls_single_size() > 0) {
      track->last_pulls.assign(hs.last_pulls_single().begin(), hs.last_pulls_single().end());
    } else {
      track->last_pulls.assign(hs.last_pulls().begin(), hs.last_pulls().end());
    }
    if (auto why = LoadAlarm(hs.alarm(), track->alarm)) {
      return where + *why;
    }
    track->alarm_event = static_cast<AlarmEvent>(std::clamp(
        static_cast<int>(hs.alarm().event()), 0, static_cast<int>(AlarmEvent::kRebaselined)));
    if (hs.alarm().has_verdict()) {
      track->alarm_verdict = std::make_unique<v1::Verdict>(hs.alarm().verdict());
    }
    track->actor = Actor{hs.alarm().user(), hs.alarm().host(), hs.alarm().comment()};
    tracks.emplace(hs.name(), std::move(track));
  }
  // Pending run summaries point into the tracks replaced here (they are not snapshotted).
  tallies_.clear();
  previous_run_.clear();
  tracks_ = std::move(tracks);
  index_.clear();
  for (const auto& [name, track] : tracks_) {
    index_.emplace(name, track.get());
  }
  return std::nullopt;
}

}  // namespace dinamo::daemon
