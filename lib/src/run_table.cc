#include "dinamo/run_table.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <istream>
#include <ostream>
#include <string_view>

namespace dinamo {

namespace {

std::vector<std::string_view> SplitFields(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      fields.push_back(line.substr(start));
      return fields;
    }
    fields.push_back(line.substr(start, comma - start));
    start = comma + 1;
  }
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

class Parser {
 public:
  Parser(const std::string& name) : name_(name) {}

  [[noreturn]] void Fail(std::size_t line, const std::string& what) const {
    throw RunTableError(name_ + ":" + std::to_string(line) + ": " + what);
  }

  void CheckHeader(std::string_view header, std::size_t& bins) const {
    const auto fields = SplitFields(header);
    if (fields.size() < 3 || Trim(fields[0]) != "run" || Trim(fields[1]) != "label") {
      Fail(1, "header must be run,label,c0,c1,... (got '" + std::string(header.substr(0, 40)) +
                  "')");
    }
    bins = fields.size() - 2;
  }

  RunRecord ParseRow(std::string_view text, std::size_t line, std::size_t bins) const {
    const auto fields = SplitFields(text);
    if (fields.size() != bins + 2) {
      Fail(line, "expected " + std::to_string(bins + 2) + " columns as in the header, got " +
                     std::to_string(fields.size()));
    }
    RunRecord r;
    r.run = ParseRun(Trim(fields[0]), line);
    r.label = ParseLabel(Trim(fields[1]), line);
    r.counts.resize(bins);
    for (std::size_t b = 0; b < bins; ++b) r.counts[b] = ParseCount(Trim(fields[b + 2]), line, b);
    return r;
  }

 private:
  std::int64_t ParseRun(std::string_view f, std::size_t line) const {
    std::int64_t run = 0;
    const auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), run);
    if (f.empty() || ec != std::errc() || end != f.data() + f.size()) {
      Fail(line, "column run: '" + std::string(f) + "' is not an integer");
    }
    return run;
  }

  Label ParseLabel(std::string_view f, std::size_t line) const {
    if (f.empty() || f == "-1") return Label::kUnknown;
    if (f == "0") return Label::kGood;
    if (f == "1") return Label::kBad;
    Fail(line, "column label: '" + std::string(f) + "' is not 0, 1, -1 or empty");
  }

  double ParseCount(std::string_view f, std::size_t line, std::size_t bin) const {
    double value = 0.0;
    const auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), value);
    const std::string where = "column c" + std::to_string(bin) + ": ";
    if (f.empty() || ec == std::errc::invalid_argument || end != f.data() + f.size()) {
      Fail(line, where + "'" + std::string(f) + "' is not a number");
    }
    if (ec == std::errc::result_out_of_range || std::isinf(value)) {
      Fail(line, where + "count is infinite");
    }
    if (std::isnan(value)) Fail(line, where + "count is NaN");
    if (value < 0.0) Fail(line, where + "count " + std::string(f) + " is negative");
    return value;
  }

  std::string name_;
};

}  // namespace

RunTable ParseRunTable(std::istream& in, const std::string& name) {
  Parser parser(name);
  std::string line;
  if (!std::getline(in, line)) parser.Fail(1, "file is empty (no header)");

  std::size_t bins = 0;
  parser.CheckHeader(line, bins);

  RunTable table;
  std::size_t number = 1;
  while (std::getline(in, line)) {
    ++number;
    if (Trim(line).empty() || line == "\r") continue;
    RunRecord r = parser.ParseRow(line, number, bins);
    if (!table.runs.empty() && r.run <= table.runs.back().run) {
      parser.Fail(number, "run " + std::to_string(r.run) + " does not increase (previous run " +
                              std::to_string(table.runs.back().run) + ")");
    }
    table.runs.push_back(std::move(r));
  }
  if (table.runs.empty()) parser.Fail(number, "no rows after the header");
  return table;
}

RunTable ReadRunTable(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw RunTableError(path + ": cannot open for reading");
  return ParseRunTable(in, path);
}

int LabelNumber(Label label) { return static_cast<int>(label); }

void WriteRunTable(const RunTable& table, std::ostream& out) {
  out << "run,label";
  for (std::size_t b = 0; b < table.bins(); ++b) out << ",c" << b;
  out << '\n';
  for (const RunRecord& r : table.runs) {
    out << r.run << ',' << LabelNumber(r.label);
    char buf[32];
    for (double c : r.counts) {
      const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, c);
      out << ',' << std::string_view(buf, static_cast<std::size_t>(end - buf));
    }
    out << '\n';
  }
}

}  // namespace dinamo
