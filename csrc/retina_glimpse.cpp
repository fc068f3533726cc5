// gdram_ext::retina_glimpse on any device's kernels: the argument checks that every kernel runs
// first, and the retina as boxes (num_scales boxes sharing one centre, box k of side
// base_size * scale_factor^k) whose gradients are summed into the location's.
#include "glimpse.h"

#include <ATen/ops/empty.h>

namespace gdram_ext {

namespace {

void check_arguments(
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size) {
  TORCH_CHECK(images.dim() == 4, "retina_glimpse: images must have shape (B, C, H, W), got ", images.sizes());
  const auto dtype = images.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
      "retina_glimpse: images must be float32, float64, float16 or bfloat16, got ",
      dtype);
  TORCH_CHECK(
      locations.dim() == 2 && locations.size(1) == 2,
      "retina_glimpse: locations must have shape (B, 2), got ",
      locations.sizes());
  TORCH_CHECK(
      at::isFloatingType(locations.scalar_type()),
      "retina_glimpse: locations must have a floating dtype, got ",
      locations.scalar_type());
  TORCH_CHECK(
      locations.size(0) == images.size(0),
      "retina_glimpse: images and locations must have the same batch size, got ",
      images.size(0),
      " and ",
      locations.size(0));
  TORCH_CHECK(
      locations.device() == images.device(),
      "retina_glimpse: images and locations must be on the same device, got ",
      images.device(),
      " and ",
      locations.device());
  TORCH_CHECK(
      images.size(1) >= 1 && images.size(2) >= 1 && images.size(3) >= 1,
      "retina_glimpse: images must have C, H and W of at least 1, got ",
      images.sizes());
  TORCH_CHECK(size >= 1, "retina_glimpse: size must be >= 1, got ", size);
  TORCH_CHECK(num_scales >= 1, "retina_glimpse: num_scales must be >= 1, got ", num_scales);
  TORCH_CHECK(
      std::isfinite(scale_factor) && scale_factor > 0.0,
      "retina_glimpse: scale_factor must be finite and > 0, got ",
      scale_factor);
  TORCH_CHECK(
      std::isfinite(base_size) && base_size > 0.0, "retina_glimpse: base_size must be finite and > 0, got ", base_size);
  TORCH_CHECK(
      mode == "bilinear" || mode == "area", "retina_glimpse: mode must be 'bilinear' or 'area', got '", mode, "'");
  double last = base_size;
  for (int64_t i = 1; i < num_scales; ++i) last *= scale_factor;
  TORCH_CHECK(
      std::isfinite(last) && last > 0.0,
      "retina_glimpse: the last scale's side, base_size * scale_factor ** (num_scales - 1) = ",
      last,
      ", must be finite and > 0");
}

void check_backward_arguments(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size) {
  check_arguments(images, locations, size, num_scales, scale_factor, mode, base_size);
  const std::vector<int64_t> expected{images.size(0), num_scales * images.size(1), size, size};
  TORCH_CHECK(
      grad_output.sizes() == c10::IntArrayRef(expected),
      "retina_glimpse_backward: grad_output must have shape ",
      c10::IntArrayRef(expected),
      ", got ",
      grad_output.sizes());
  TORCH_CHECK(
      grad_output.device() == images.device(), "retina_glimpse_backward: grad_output must be on the images' device");
}

// The retina's boxes: num_scales boxes sharing the location (B, 2) (a box stride of 0), read in place.
Boxes retina_boxes(const at::Tensor& locations, int64_t size, int64_t num_scales, double scale_factor, std::string_view mode,
                   double base_size) {
  return Boxes{coordinates(locations, 0, locations.stride(1)), Coordinates{nullptr, Coordinates::Type::Double, 0, 0, 0},
               base_size, scale_factor, num_scales, size, size, mode == "area"};
}

}  // namespace

at::Tensor retina_glimpse_forward(
    ForwardKernel kernel,
    c10::DeviceType device,
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size) {
  check_arguments(images, locations, size, num_scales, scale_factor, mode, base_size);
  check_device(images, device, "retina_glimpse");
  at::Tensor output = at::empty({images.size(0), num_scales * images.size(1), size, size}, images.options());
  if (output.numel() == 0) return output;
  const at::Tensor loc = readable_coordinates(locations);
  kernel(images, retina_boxes(loc, size, num_scales, scale_factor, mode, base_size), output);
  return output;
}

std::tuple<at::Tensor, at::Tensor> retina_glimpse_backward(
    BackwardKernel kernel,
    c10::DeviceType device,
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size,
    bool images_grad,
    bool locations_grad) {
  check_backward_arguments(grad_output, images, locations, size, num_scales, scale_factor, mode, base_size);
  check_device(images, device, "retina_glimpse_backward");
  const at::Tensor loc = readable_coordinates(locations);
  auto [grad_images, grad_boxes] = kernel(
      grad_output, images, retina_boxes(loc, size, num_scales, scale_factor, mode, base_size), images_grad,
      locations_grad, false);
  at::Tensor grad_locations = locations_grad ? grad_boxes.narrow(2, 0, 2).sum(1).to(locations.scalar_type())
                                             : at::empty({0}, locations.options());
  return {grad_images, grad_locations};
}

}  // namespace gdram_ext
