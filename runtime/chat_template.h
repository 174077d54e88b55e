// Chat prompts: the model's `tokenizer.chat_template` (a Jinja string in the
// GGUF file) recognised as one of the common families and applied in C++.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace micromoe::runtime {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

enum class ChatFormat {
  kChatMl,  // <|im_start|>role\ncontent<|im_end|>\n (Qwen, Granite-style ChatML)
  kTulu,    // <|role|>\ncontent\n (OLMoE / Tulu)
};

// Recognises the family of a chat template; InvalidArgument naming the
// template (its first characters) when it is none micromoe supports, or
// NotFound when the model has none.
absl::StatusOr<ChatFormat> DetectChatFormat(std::string_view chat_template);

// The prompt text for `messages` followed by the opening of the assistant's turn.
// Roles other than system/user/assistant are rejected.
absl::StatusOr<std::string> FormatChat(ChatFormat format, const std::vector<ChatMessage>& messages);

class Model;
// The prompt tokens of `messages` in the model's own chat format (special
// tokens parsed, BOS as the model says).
absl::StatusOr<std::vector<int32_t>> EncodeChat(const Model& model, const std::vector<ChatMessage>& messages);

}  // namespace micromoe::runtime
