// Message building for statuses. Debian's Abseil is built with its own
// string_view type, so absl::StrCat does not take std::string_view; this does.
#pragma once

#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/string_view.h"

namespace micromoe {

namespace internal {
inline void AppendPiece(std::ostringstream& os, absl::string_view s) { os.write(s.data(), s.size()); }
template <typename T>
void AppendPiece(std::ostringstream& os, const T& v) {
  if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>) {
    os << static_cast<int>(v);
  } else {
    os << v;
  }
}
}  // namespace internal

template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream os;
  os.precision(9);
  (internal::AppendPiece(os, args), ...);
  return os.str();
}

}  // namespace micromoe
