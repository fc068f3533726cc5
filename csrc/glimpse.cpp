// Operator schemas of the glimpse operators (gdram_ext::retina_glimpse, gdram_ext::box_glimpse and
// their backwards) and the Python module whose loading registers them with the dispatcher.
#include "glimpse.h"

#include <torch/extension.h>
#include <torch/library.h>

namespace gdram_ext {

void check_device(const at::Tensor& images, c10::DeviceType device, const char* op) {
  TORCH_CHECK(
      images.device().type() == device, op, " (", device, " kernel): images must be on a ", device, " device, got ",
      images.device());
}

at::Tensor readable_coordinates(const at::Tensor& tensor) {
  const auto dtype = tensor.scalar_type();
  const bool readable = dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
  return readable ? tensor : tensor.to(at::kDouble);
}

Coordinates coordinates(const at::Tensor& tensor, int64_t stride_k, int64_t stride_i) {
  Coordinates::Type type = Coordinates::Type::Double;
  switch (tensor.scalar_type()) {
    case at::kFloat:
      type = Coordinates::Type::Float;
      break;
    case at::kHalf:
      type = Coordinates::Type::Half;
      break;
    case at::kBFloat16:
      type = Coordinates::Type::BFloat16;
      break;
    case at::kDouble:
      break;
    default:
      TORCH_CHECK(false, "gdram_ext: coordinates of dtype ", tensor.scalar_type(), " must go through readable_coordinates");
  }
  return Coordinates{tensor.const_data_ptr(), type, tensor.stride(0), stride_k, stride_i};
}

TORCH_LIBRARY(gdram_ext, m) {
  m.def(
      "retina_glimpse(Tensor images, Tensor locations, int size, int num_scales, float scale_factor, "
      "str mode, float base_size) -> Tensor");
  m.def(
      "retina_glimpse_backward(Tensor grad_output, Tensor images, Tensor locations, int size, int num_scales, "
      "float scale_factor, str mode, float base_size, bool images_grad, bool locations_grad) -> (Tensor, Tensor)");
  m.def("box_glimpse(Tensor images, Tensor centres, Tensor sides, int[2] size, str mode) -> Tensor");
  m.def(
      "box_glimpse_backward(Tensor grad_output, Tensor images, Tensor centres, Tensor sides, int[2] size, str mode, "
      "bool images_grad, bool centres_grad, bool sides_grad) -> (Tensor, Tensor, Tensor)");
}

}  // namespace gdram_ext

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Compiled kernels of gdram_ext: loading this module registers the gdram_ext operators.";
#ifdef GDRAM_WITH_CUDA
  m.attr("cuda_compiled") = true;
#else
  m.attr("cuda_compiled") = false;
#endif
}
