#include "runtime/chat_template.h"

#include "base/str_cat.h"
#include "runtime/model.h"

namespace micromoe::runtime {

absl::StatusOr<ChatFormat> DetectChatFormat(std::string_view t) {
  if (t.empty()) return absl::NotFoundError("the model has no chat template (tokenizer.chat_template)");
  if (t.find("<|im_start|>") != std::string_view::npos) return ChatFormat::kChatMl;
  if (t.find("<|user|>") != std::string_view::npos && t.find("<|assistant|>") != std::string_view::npos) {
    return ChatFormat::kTulu;
  }
  return absl::InvalidArgumentError(StrCat("unsupported chat template (supported: ChatML, OLMoE/Tulu): \"",
                                           t.substr(0, 80), t.size() > 80 ? "..." : "", "\""));
}

absl::StatusOr<std::string> FormatChat(ChatFormat format, const std::vector<ChatMessage>& messages) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return absl::InvalidArgumentError(StrCat("messages[", i, "].role: '", m.role,
                                               "' is not system, user or assistant"));
    }
    if (format == ChatFormat::kChatMl) {
      out += StrCat("<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
    } else {
      out += StrCat("<|", m.role, "|>\n", m.content, "\n");
    }
  }
  out += format == ChatFormat::kChatMl ? "<|im_start|>assistant\n" : "<|assistant|>\n";
  return out;
}

absl::StatusOr<std::vector<int32_t>> EncodeChat(const Model& model, const std::vector<ChatMessage>& messages) {
  const gguf::Value* t = model.file().Find("tokenizer.chat_template");
  const std::string_view text = t && t->type == gguf::ValueType::kString ? t->str : std::string_view();
  auto format = DetectChatFormat(text);
  if (!format.ok()) return format.status();
  auto prompt = FormatChat(*format, messages);
  if (!prompt.ok()) return prompt.status();
  return model.tokenizer().Encode(*prompt, model.tokenizer().add_bos(), /*parse_special=*/true);
}

}  // namespace micromoe::runtime
