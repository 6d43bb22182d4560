#include "data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>

#include "core/error.h"

namespace hymba::data {

namespace {

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

int check_override(const std::optional<int>& v, int model_value, int vocab, const char* name,
                   const std::string& path) {
  if (!v) return model_value;
  if (*v < -1 || *v >= vocab)
    HYMBA_USER_ERROR("--", name, "-id ", *v, " is outside the vocabulary of ", path, " (", vocab,
                     " tokens; -1 means none)");
  return *v;
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path, const SpecialIds& overrides) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) HYMBA_USER_ERROR(path, ": tokenizer model not found");
  if (std::filesystem::is_directory(path, ec))
    HYMBA_USER_ERROR(path, ": is a directory; give the tokenizer's .model file (e.g. ", path, "/tokenizer.model)");
  auto sp = std::make_shared<sentencepiece::SentencePieceProcessor>();
  auto status = sp->Load(path);
  if (!status.ok())
    HYMBA_USER_ERROR(path, ": not a valid sentencepiece model (", status.ToString(), ")");
  Tokenizer t;
  t.path_ = path;
  t.vocab_size_ = sp->GetPieceSize();
  t.unk_ = sp->unk_id();
  t.bos_ = check_override(overrides.bos, sp->bos_id(), t.vocab_size_, "bos", path);
  t.eos_ = check_override(overrides.eos, sp->eos_id(), t.vocab_size_, "eos", path);
  t.pad_ = check_override(overrides.pad, sp->pad_id(), t.vocab_size_, "pad", path);
  int byte_a = sp->PieceToId("<0x41>");
  t.byte_fallback_ = byte_a >= 0 && sp->IsByte(byte_a);
  t.fingerprint_ = fnv1a64(sp->serialized_model_proto());
  t.sp_ = std::move(sp);
  return t;
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<int> ids;
  auto status = sp_->Encode(text, &ids);
  HYMBA_CHECK(status.ok(), "sentencepiece encode failed: ", status.ToString());
  out.insert(out.end(), ids.begin(), ids.end());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  encode_append(text, out);
  return out;
}

std::vector<TokenSpan> Tokenizer::encode_spans(std::string_view text) const {
  auto spt = sp_->EncodeAsImmutableProto(text);
  std::vector<TokenSpan> out;
  out.reserve(spt.pieces_size());
  for (size_t i = 0; i < spt.pieces_size(); ++i) {
    auto p = spt.pieces(int(i));
    out.push_back({int32_t(p.id()), p.begin(), p.end()});
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  for (int id : v) HYMBA_CHECK(id >= 0 && id < vocab_size_, "token id ", id, " outside vocabulary ", vocab_size_);
  std::string out;
  auto status = sp_->Decode(v, &out);
  HYMBA_CHECK(status.ok(), "sentencepiece decode failed: ", status.ToString());
  return out;
}

std::string Tokenizer::id_to_piece(int id) const {
  HYMBA_CHECK(id >= 0 && id < vocab_size_, "token id ", id, " outside vocabulary ", vocab_size_);
  return sp_->IdToPiece(id);
}

int Tokenizer::piece_to_id(std::string_view piece) const {
  int id = sp_->PieceToId(piece);
  if (id == unk_ && (unk_ < 0 || sp_->IdToPiece(unk_) != piece)) return -1;
  return id;
}

bool Tokenizer::is_control(int id) const { return id >= 0 && id < vocab_size_ && sp_->IsControl(id); }

}  // namespace hymba::data
