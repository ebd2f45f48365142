// dinamod: the DINAMO data-quality-monitoring daemon (DESIGN.md section 6).

#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "config.h"
#include "daemon.h"
#if DINAMO_HAVE_TORCH
#include "transformer_training.h"
#endif

namespace {

constexpr int kExitConfig = 2;
constexpr int kExitStart = 1;

void SetUpLogging() {
  auto logger = spdlog::stderr_logger_st("dinamod");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
  spdlog::flush_on(spdlog::level::info);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dinamod: online data-quality monitoring with DINAMO templates"};
  std::string config_path;
  app.add_option("--config", config_path, "YAML configuration file")->required();
  bool check_only = false;
  app.add_flag("--check-config", check_only, "validate the configuration and exit");
  CLI11_PARSE(app, argc, argv);

  SetUpLogging();
#if DINAMO_HAVE_TORCH
  // Before the configuration is read: it may name the method. The daemon registers it again
  // with its training settings.
  dinamo::daemon::RegisterTransformerMethod(dinamo::daemon::TrainingConfig{});
#endif
  dinamo::daemon::Config config;
  try {
    config = dinamo::daemon::LoadConfig(config_path);
  } catch (const dinamo::daemon::ConfigError& e) {
    spdlog::critical("config refused: {}", e.what());
    return kExitConfig;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  if (check_only) {
    spdlog::info("config valid file={}", config_path);
    return 0;
  }
  spdlog::info("dinamod starting version={} config={}", dinamo::daemon::Version(), config_path);
  spdlog::info("config loaded file={} rules={} method={} threshold={} auto_accept={} log_level={}",
               config_path, config.rules.size(), config.defaults.method, config.defaults.threshold,
               dinamo::daemon::AutoAcceptName(config.defaults.auto_accept), config.log_level);

  try {
    dinamo::daemon::Daemon daemon(std::move(config));
    return daemon.Run();
  } catch (const dinamo::daemon::StartError& e) {
    spdlog::critical("cannot start: {}", e.what());
    return kExitStart;
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return kExitStart;
  }
}
