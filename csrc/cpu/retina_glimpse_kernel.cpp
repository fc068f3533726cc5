// CPU kernels of gdram_ext::retina_glimpse.
//
// Forward: one at::parallel_for over (sample, scale) pairs; each task computes its cells'
// bilinear taps once, then every channel's size x size cells.
// Backward: one at::parallel_for over (sample, channel) image planes. A task is the only
// writer of its plane of the images' gradient and of its own partial location gradient, and
// the partials are summed over channels in a fixed order afterwards: the CPU backward is
// deterministic, with no atomics.
#include "../retina_glimpse.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace gdram_ext {
namespace {

// Element strides of a (B, C, H, W) tensor.
struct Strides4 {
  int64_t b, c, h, w;
  explicit Strides4(const at::Tensor& t) : b(t.stride(0)), c(t.stride(1)), h(t.stride(2)), w(t.stride(3)) {}
};

void build_taps(std::vector<Taps>& taps, double start, double cell, int64_t size, int64_t extent) {
  taps.resize(size);
  for (int64_t k = 0; k < size; ++k) taps[k] = bilinear_taps(start + (static_cast<double>(k) + 0.5) * cell, extent);
}

template <typename scalar_t>
void forward_kernel(const at::Tensor& images, const at::Tensor& locations, at::Tensor& output, const Glimpse& glimpse) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = images.size(0), channels = images.size(1), height = images.size(2), width = images.size(3);
  const int64_t size = glimpse.size, scales = glimpse.num_scales, cells = size * size;
  const Strides4 in(images);
  const scalar_t* image_data = images.const_data_ptr<scalar_t>();
  const double* loc = locations.const_data_ptr<double>();
  scalar_t* out_data = output.mutable_data_ptr<scalar_t>();
  const int64_t grain = std::max<int64_t>(1, 16384 / (channels * cells));

  at::parallel_for(0, batch * scales, grain, [&](int64_t begin, int64_t end) {
    std::vector<Taps> taps_x, taps_y;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / scales, s = task % scales;
      const double side = glimpse.side(s), cell = side / static_cast<double>(size);
      const double start_x = glimpse_start(loc[2 * b], width, side);
      const double start_y = glimpse_start(loc[2 * b + 1], height, side);
      if (!glimpse.area) {
        build_taps(taps_x, start_x, cell, size, width);
        build_taps(taps_y, start_y, cell, size, height);
      }
      for (int64_t ch = 0; ch < channels; ++ch) {
        const scalar_t* plane = image_data + b * in.b + ch * in.c;
        scalar_t* out_plane = out_data + ((b * scales + s) * channels + ch) * cells;
        for (int64_t r = 0; r < size; ++r) {
          for (int64_t c = 0; c < size; ++c) {
            const acc_t value = glimpse.area
                ? area_value<acc_t>(plane, in.h, in.w, AreaCell{start_x + c * cell, start_y + r * cell, cell, height, width})
                : bilinear_value<acc_t>(plane, in.h, in.w, taps_y[r], taps_x[c]);
            out_plane[r * size + c] = static_cast<scalar_t>(value);
          }
        }
      }
    }
  });
}

at::Tensor retina_glimpse_cpu(
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    double base_size,
    std::string_view mode) {
  const Glimpse glimpse = check_arguments(images, locations, size, num_scales, scale_factor, base_size, mode);
  TORCH_CHECK(images.device().is_cpu(), "retina_glimpse (CPU kernel): images must be on the CPU");
  at::Tensor output = at::empty({images.size(0), num_scales * images.size(1), size, size}, images.options());
  if (output.numel() == 0) return output;
  const at::Tensor loc = locations.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(), "retina_glimpse_cpu", [&] {
    forward_kernel<scalar_t>(images, loc, output, glimpse);
  });
  return output;
}

template <typename acc_t>
struct PlainAdd {
  acc_t* plane;
  void operator()(int64_t index, acc_t value) const { plane[index] += value; }
};

template <typename scalar_t>
void backward_kernel(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const at::Tensor& locations,
    at::Tensor* grad_images,
    at::Tensor* grad_partial,
    const Glimpse& glimpse) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = images.size(1), height = images.size(2), width = images.size(3);
  const int64_t size = glimpse.size, scales = glimpse.num_scales, cells = size * size;
  const Strides4 in(images);
  const scalar_t* image_data = images.const_data_ptr<scalar_t>();
  const scalar_t* grad_data = grad_output.const_data_ptr<scalar_t>();
  const double* loc = locations.const_data_ptr<double>();
  acc_t* grad_image_data = grad_images ? grad_images->mutable_data_ptr<acc_t>() : nullptr;
  double* partial = grad_partial ? grad_partial->mutable_data_ptr<double>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 4096 / (scales * cells));

  at::parallel_for(0, images.size(0) * channels, grain, [&](int64_t begin, int64_t end) {
    std::vector<Taps> taps_x, taps_y;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / channels, ch = task % channels;
      const scalar_t* plane = image_data + b * in.b + ch * in.c;
      const PlainAdd<acc_t> add{grad_image_data ? grad_image_data + task * height * width : nullptr};
      acc_t d_x = 0, d_y = 0;  // d loss / d (pixel coordinates of the glimpse centre)
      for (int64_t s = 0; s < scales; ++s) {
        const double side = glimpse.side(s), cell = side / static_cast<double>(size);
        const double start_x = glimpse_start(loc[2 * b], width, side);
        const double start_y = glimpse_start(loc[2 * b + 1], height, side);
        const scalar_t* grad_cells = grad_data + ((b * scales + s) * channels + ch) * cells;
        if (!glimpse.area) {
          build_taps(taps_x, start_x, cell, size, width);
          build_taps(taps_y, start_y, cell, size, height);
        }
        for (int64_t r = 0; r < size; ++r) {
          for (int64_t c = 0; c < size; ++c) {
            const acc_t grad = static_cast<acc_t>(grad_cells[r * size + c]);
            const AreaCell area{start_x + c * cell, start_y + r * cell, cell, height, width};
            if (add.plane) {
              if (glimpse.area) {
                area_scatter(area, grad, add);
              } else {
                bilinear_scatter(taps_y[r], taps_x[c], grad, width, add);
              }
            }
            if (partial) {
              acc_t slope_x, slope_y;
              if (glimpse.area) {
                area_slopes<acc_t>(plane, in.h, in.w, area, slope_x, slope_y);
              } else {
                bilinear_slopes<acc_t>(plane, in.h, in.w, taps_y[r], taps_x[c], slope_x, slope_y);
              }
              d_x += grad * slope_x;
              d_y += grad * slope_y;
            }
          }
        }
      }
      if (partial) {
        partial[2 * task] = static_cast<double>(d_x) * 0.5 * static_cast<double>(width);
        partial[2 * task + 1] = static_cast<double>(d_y) * 0.5 * static_cast<double>(height);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> retina_glimpse_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    double base_size,
    std::string_view mode,
    bool images_grad,
    bool locations_grad) {
  const Glimpse glimpse =
      check_backward_arguments(grad_output, images, locations, size, num_scales, scale_factor, base_size, mode);
  TORCH_CHECK(images.device().is_cpu(), "retina_glimpse_backward (CPU kernel): images must be on the CPU");
  const auto acc_type = at::toOpMathType(images.scalar_type());
  at::Tensor grad_images = images_grad ? at::zeros(images.sizes(), images.options().dtype(acc_type))
                                       : at::empty({0}, images.options());
  at::Tensor grad_partial = locations_grad ? at::zeros({images.size(0), images.size(1), 2}, locations.options().dtype(at::kDouble))
                                           : at::empty({0}, locations.options());
  if (images.numel() > 0 && (images_grad || locations_grad)) {
    const at::Tensor grad = grad_output.contiguous();
    const at::Tensor loc = locations.to(at::kDouble).contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(), "retina_glimpse_backward_cpu", [&] {
      backward_kernel<scalar_t>(
          grad, images, loc, images_grad ? &grad_images : nullptr, locations_grad ? &grad_partial : nullptr, glimpse);
    });
  }
  at::Tensor grad_locations = locations_grad ? grad_partial.sum(1).to(locations.scalar_type()) : grad_partial;
  return {images_grad ? grad_images.to(images.scalar_type()) : grad_images, grad_locations};
}

}  // namespace

TORCH_LIBRARY_IMPL(gdram_ext, CPU, m) {
  m.impl("retina_glimpse", &retina_glimpse_cpu);
  m.impl("retina_glimpse_backward", &retina_glimpse_backward_cpu);
}

}  // namespace gdram_ext
