// Sequential and ModuleList.
#include <kiln/models/nn/containers.h>

namespace kiln::nn {

std::shared_ptr<Module> ModuleSequence::operator[](int64_t index) const {
  const auto& list = child_list();
  int64_t n = static_cast<int64_t>(list.size());
  KILN_CHECK(index >= -n && index < n, type_name(), "[", index, "]: index out of range for ", n, " module",
             n == 1 ? "" : "s");
  return list[static_cast<size_t>(index < 0 ? index + n : index)].second;
}

Tensor Sequential::forward(const Tensor& input) {
  Tensor x = input;
  for (const auto& [name, m] : child_list()) x = m->forward(x);
  return x;
}

}  // namespace kiln::nn
