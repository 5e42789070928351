// spdlog-backed logging; KILN_LOG_LEVEL picks the level once at first use.
#include <kiln/core/log.h>

#include <cstdlib>
#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace kiln {
namespace {

spdlog::level::level_enum to_spd(LogLevel l) {
  switch (l) {
    case LogLevel::Trace: return spdlog::level::trace;
    case LogLevel::Debug: return spdlog::level::debug;
    case LogLevel::Info: return spdlog::level::info;
    case LogLevel::Warn: return spdlog::level::warn;
    case LogLevel::Error: return spdlog::level::err;
    case LogLevel::Off: break;
  }
  return spdlog::level::off;
}

std::shared_ptr<spdlog::logger> make_logger() {
  auto lg = spdlog::stderr_color_mt("kiln");
  lg->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [kiln] [%^%l%$] %v");
  lg->set_level(spdlog::level::info);
  if (const char* env = std::getenv("KILN_LOG_LEVEL")) {
    auto lvl = spdlog::level::from_str(env);  // unknown names map to off
    if (lvl == spdlog::level::off && std::string(env) != "off") {
      lg->warn("KILN_LOG_LEVEL='{}' is not one of trace, debug, info, warn, error, off; using info", env);
    } else {
      lg->set_level(lvl);
    }
  }
  return lg;
}

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> lg = make_logger();
  return *lg;
}

}  // namespace

bool log_enabled(LogLevel level) { return level != LogLevel::Off && logger().should_log(to_spd(level)); }
void log_message(LogLevel level, const std::string& msg) { logger().log(to_spd(level), "{}", msg); }
void set_log_level(LogLevel level) { logger().set_level(to_spd(level)); }

}  // namespace kiln
