// One-line logs on stderr: UTC time, program, level, message. Control plane only.
#pragma once

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

namespace nerve::app {

enum class Level { kDebug, kInfo, kWarn, kError };
inline Level g_log_level = Level::kInfo;
inline std::string g_program = "nerve";

template <typename... Args>
void log(Level lv, fmt::format_string<Args...> f, Args&&... args) {
  if (lv < g_log_level) return;
  static constexpr std::string_view kNames[] = {"debug", "info", "warn", "error"};
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  fmt::print(stderr, "{:%Y-%m-%dT%H:%M:%S}.{:03}Z {} {}: {}\n", fmt::gmtime(std::chrono::system_clock::to_time_t(now)),
             ms, g_program, kNames[static_cast<int>(lv)], fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace nerve::app
