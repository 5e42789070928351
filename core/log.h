// Logging through spdlog. The level comes from KILN_LOG_LEVEL (trace, debug, info, warn,
// error, off); default info. The functions take a finished string so that this header
// stays free of spdlog/fmt.
#pragma once
#include <string>

#include <kiln/core/error.h>

namespace kiln {

enum class LogLevel { Trace, Debug, Info, Warn, Error, Off };

void log_message(LogLevel level, const std::string& msg);
bool log_enabled(LogLevel level);
void set_log_level(LogLevel level);

template <class... A> void log_debug(const A&... a) {
  if (log_enabled(LogLevel::Debug)) log_message(LogLevel::Debug, detail::str(a...));
}
template <class... A> void log_info(const A&... a) {
  if (log_enabled(LogLevel::Info)) log_message(LogLevel::Info, detail::str(a...));
}
template <class... A> void log_warn(const A&... a) {
  if (log_enabled(LogLevel::Warn)) log_message(LogLevel::Warn, detail::str(a...));
}
template <class... A> void log_error(const A&... a) {
  if (log_enabled(LogLevel::Error)) log_message(LogLevel::Error, detail::str(a...));
}

}  // namespace kiln
