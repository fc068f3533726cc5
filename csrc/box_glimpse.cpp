// gdram_ext::box_glimpse on any device's kernels: the argument checks that every kernel runs first,
// the boxes read in place, and the boxes' gradients mapped back to the centres and sides.
#include "glimpse.h"

#include <ATen/ops/empty.h>

#include <vector>

namespace gdram_ext {
namespace {

// The output cells per box, (rows, cols), after the checks of every argument.
std::pair<int64_t, int64_t> check_arguments(
    const at::Tensor& images,
    const at::Tensor& centres,
    const at::Tensor& sides,
    c10::IntArrayRef size,
    std::string_view mode) {
  TORCH_CHECK(images.dim() == 4, "box_glimpse: images must have shape (B, C, H, W), got ", images.sizes());
  const auto dtype = images.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
      "box_glimpse: images must be float32, float64, float16 or bfloat16, got ",
      dtype);
  TORCH_CHECK(
      images.size(1) >= 1 && images.size(2) >= 1 && images.size(3) >= 1,
      "box_glimpse: images must have C, H and W of at least 1, got ",
      images.sizes());
  TORCH_CHECK(
      centres.dim() == 3 && centres.size(2) == 2, "box_glimpse: centres must have shape (B, K, 2), got ", centres.sizes());
  TORCH_CHECK(
      at::isFloatingType(centres.scalar_type()), "box_glimpse: centres must have a floating dtype, got ", centres.scalar_type());
  TORCH_CHECK(
      (sides.dim() == 2) || (sides.dim() == 3 && sides.size(2) == 2),
      "box_glimpse: sides must have shape (B, K) or (B, K, 2), got ",
      sides.sizes());
  TORCH_CHECK(
      at::isFloatingType(sides.scalar_type()), "box_glimpse: sides must have a floating dtype, got ", sides.scalar_type());
  TORCH_CHECK(
      centres.size(0) == images.size(0) && sides.size(0) == images.size(0),
      "box_glimpse: images, centres and sides must have the same batch size, got ",
      images.size(0), ", ", centres.size(0), " and ", sides.size(0));
  TORCH_CHECK(
      sides.size(1) == centres.size(1),
      "box_glimpse: centres and sides must have the same number of boxes K, got ",
      centres.size(1), " and ", sides.size(1));
  TORCH_CHECK(
      centres.device() == images.device() && sides.device() == images.device(),
      "box_glimpse: images, centres and sides must be on the same device, got ",
      images.device(), ", ", centres.device(), " and ", sides.device());
  TORCH_CHECK(size.size() == 2, "box_glimpse: size must be (rows, cols), got ", size);
  TORCH_CHECK(size[0] >= 1 && size[1] >= 1, "box_glimpse: size must be >= 1 on both axes, got ", size);
  TORCH_CHECK(mode == "bilinear" || mode == "area", "box_glimpse: mode must be 'bilinear' or 'area', got '", mode, "'");
  return {size[0], size[1]};
}

// The boxes of a call, read in place from the caller's centres and sides (square sides: the same
// value for width and height, a stride of 0).
Boxes box_boxes(const at::Tensor& centres, const at::Tensor& sides, int64_t rows, int64_t cols, std::string_view mode) {
  const Coordinates side_values = sides.dim() == 2 ? coordinates(sides, sides.stride(1), 0)
                                                   : coordinates(sides, sides.stride(1), sides.stride(2));
  return Boxes{coordinates(centres, centres.stride(1), centres.stride(2)), side_values, 0.0, 0.0, centres.size(1), rows,
               cols, mode == "area"};
}

}  // namespace

at::Tensor box_glimpse_forward(
    ForwardKernel kernel,
    c10::DeviceType device,
    const at::Tensor& images,
    const at::Tensor& centres,
    const at::Tensor& sides,
    c10::IntArrayRef size,
    std::string_view mode) {
  const auto [rows, cols] = check_arguments(images, centres, sides, size, mode);
  check_device(images, device, "box_glimpse");
  at::Tensor output = at::empty({images.size(0), centres.size(1), images.size(1), rows, cols}, images.options());
  if (output.numel() == 0) return output;
  const at::Tensor centre_values = readable_coordinates(centres), side_values = readable_coordinates(sides);
  kernel(images, box_boxes(centre_values, side_values, rows, cols, mode), output);
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> box_glimpse_backward(
    BackwardKernel kernel,
    c10::DeviceType device,
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const at::Tensor& centres,
    const at::Tensor& sides,
    c10::IntArrayRef size,
    std::string_view mode,
    bool images_grad,
    bool centres_grad,
    bool sides_grad) {
  const auto [rows, cols] = check_arguments(images, centres, sides, size, mode);
  check_device(images, device, "box_glimpse_backward");
  const std::vector<int64_t> expected{images.size(0), centres.size(1), images.size(1), rows, cols};
  TORCH_CHECK(
      grad_output.sizes() == c10::IntArrayRef(expected),
      "box_glimpse_backward: grad_output must have shape ",
      c10::IntArrayRef(expected),
      ", got ",
      grad_output.sizes());
  TORCH_CHECK(
      grad_output.device() == images.device(), "box_glimpse_backward: grad_output must be on the images' device");
  const at::Tensor centre_values = readable_coordinates(centres), side_values = readable_coordinates(sides);
  auto [grad_images, grad_boxes] = kernel(
      grad_output, images, box_boxes(centre_values, side_values, rows, cols, mode), images_grad, centres_grad, sides_grad);
  at::Tensor grad_centres = centres_grad ? grad_boxes.narrow(2, 0, 2).to(centres.scalar_type()).contiguous()
                                         : at::empty({0}, centres.options());
  at::Tensor grad_sides = at::empty({0}, sides.options());
  if (sides_grad) {
    const at::Tensor per_axis = grad_boxes.narrow(2, 2, 2);
    grad_sides = (sides.dim() == 2 ? per_axis.sum(2) : per_axis).to(sides.scalar_type()).contiguous();
  }
  return {grad_images, grad_centres, grad_sides};
}

}  // namespace gdram_ext
