#pragma once

// Running the project's own binaries from tests: exit code and what they printed.

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace dinamo::testing {

struct ProcessResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `command` through the shell, stderr merged into stdout.
inline ProcessResult RunCommand(const std::string& command) {
  ProcessResult result;
  std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) result.output.append(buf.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline std::string BinaryPath(const std::string& relative) {
  return std::string(DINAMO_BINARY_DIR) + "/" + relative;
}

}  // namespace dinamo::testing
