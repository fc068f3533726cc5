// The glimpse kernels' shared geometry and per-cell math (host/device inline functions), and the
// declarations that the dispatcher registration, the argument checks and the CPU and CUDA kernels share.
//
// One family of kernels serves both operators. A call reads K boxes per image; box (b, k) has a
// centre and a width and height in pixels, and is cut into rows x cols cells. box_glimpse gives
// every box its own centre and sides; retina_glimpse is the special case of K = num_scales boxes
// sharing one centre, box k of side base_size * scale_factor^k (Boxes, below, states both).
//
// What is shared. Every kernel places its cells with the functions here (Boxes::frame, glimpse_start,
// bilinear_taps, area_span, area_overlap, pixel_at), so all devices agree on where a cell lies and
// which pixels it reads. The per-cell arithmetic below them (bilinear_value, area_value, their
// slopes and scatters) serves the CUDA kernels, which compute one output cell per thread, and the
// CPU backward. The CPU forward does not use the per-cell values: it has its own vectorised path
// (cpu/glimpse_kernel.cpp) that computes a box's taps or coverage weights once for every channel
// and reads a cell's two horizontal taps as one pixel pair, several cells per SSE/AVX2 step, which
// a function of one cell cannot do. The tests hold every path to the same reference
// (gdram_ext/reference.py).
//
// Geometry. Pixel i of an axis of `extent` pixels spans [i, i + 1). A normalised coordinate
// u in [-1, 1] maps to the continuous pixel coordinate (u + 1) / 2 * extent. A box of width `side`
// centred there starts at that coordinate - side / 2 and is cut into `cols` cells of width
// `cell = side / cols`: cell k spans [start + k * cell, start + (k + 1) * cell); likewise vertically.
//
// Every coordinate is computed in double whatever the image dtype, and is compared against
// the image bounds before any integer conversion, so that NaN, +-inf or 1e30 centres give
// empty footprints (zeros) and no index can overflow. A box whose side is not finite and > 0
// reads zeros and has zero gradient (BoxFrame::valid).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <string_view>
#include <tuple>

#if defined(__CUDACC__)
#define GDRAM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define GDRAM_HOST_DEVICE inline
#endif

namespace gdram_ext {

// Where one box lies, in pixels: its left and top edges and the width and height of its cells.
struct BoxFrame {
  double left, top, cell_w, cell_h;
  bool valid;  // false: a side is not finite and > 0; the box reads zeros
};

// A tensor of coordinates read in place, whatever its floating dtype and strides: element
// (b, k, i) is at data + b * stride_b + k * stride_k + i * stride_i, converted to double. Reading
// the caller's tensors directly spares a conversion kernel per call (the host's share of a call).
struct Coordinates {
  enum class Type : int8_t { Float, Double, Half, BFloat16 };
  const void* data;
  Type type;
  int64_t stride_b, stride_k, stride_i;

  GDRAM_HOST_DEVICE double at(int64_t b, int64_t k, int64_t i) const {
    const int64_t index = b * stride_b + k * stride_k + i * stride_i;
    switch (type) {
      case Type::Float:
        return static_cast<double>(static_cast<const float*>(data)[index]);
      case Type::Half:
        return static_cast<double>(static_cast<float>(static_cast<const c10::Half*>(data)[index]));
      case Type::BFloat16:
        return static_cast<double>(static_cast<float>(static_cast<const c10::BFloat16*>(data)[index]));
      default:
        return static_cast<const double*>(data)[index];
    }
  }
};

// The boxes of one call, read on the kernels' device. Box (b, k) is centred at the normalised
// (x, y) = (centres.at(b, k, 0), centres.at(b, k, 1)); its (width, height) in pixels are
// (sides.at(b, k, 0), sides.at(b, k, 1)) or, with no sides (the retina, sides.data == nullptr),
// both base_size * scale_factor^k.
struct Boxes {
  Coordinates centres, sides;
  double base_size, scale_factor;
  int64_t count;       // K: boxes per image
  int64_t rows, cols;  // cells per box
  bool area;           // false: bilinear sample at each cell's centre; true: mean over each cell

  // Side of the retina's scale k: base_size * scale_factor^k, by repeated products.
  GDRAM_HOST_DEVICE double scale_side(int64_t k) const {
    double side = base_size;
    for (int64_t i = 0; i < k; ++i) side *= scale_factor;
    return side;
  }

  GDRAM_HOST_DEVICE BoxFrame frame(int64_t b, int64_t k, int64_t height, int64_t width) const;
};

// floor and ceil of a value already known to lie well inside the int64 range: a truncating
// conversion and a correction, with no libm call (x86-64's baseline has no rounding instruction).
GDRAM_HOST_DEVICE int64_t floor_bounded(double v) {
  const int64_t i = static_cast<int64_t>(v);
  return i - static_cast<int64_t>(v < static_cast<double>(i));
}

GDRAM_HOST_DEVICE int64_t ceil_bounded(double v) {
  const int64_t i = static_cast<int64_t>(v);
  return i + static_cast<int64_t>(v > static_cast<double>(i));
}

// Left (or top) edge, in pixels, of a scale's square of `side` pixels centred at `coord`.
GDRAM_HOST_DEVICE double glimpse_start(double coord, int64_t extent, double side) {
  return (coord + 1.0) * 0.5 * static_cast<double>(extent) - 0.5 * side;
}

// The two bilinear taps along one axis at continuous coordinate `centre`: pixels index and
// index + 1 with weights weight0 and weight1; a tap outside [0, extent) reads zero.
struct Taps {
  int64_t index;
  double weight0;
  double weight1;
  bool valid0;
  bool valid1;
};

GDRAM_HOST_DEVICE Taps bilinear_taps(double centre, int64_t extent) {
  const double pos = centre - 0.5;  // pixel i's centre is at i + 0.5
  Taps taps{0, 0.0, 0.0, false, false};
  if (!(pos >= -1.0 && pos < static_cast<double>(extent))) return taps;  // also rejects NaN
  taps.index = floor_bounded(pos);
  const double frac = pos - static_cast<double>(taps.index);
  taps.weight0 = 1.0 - frac;
  taps.weight1 = frac;
  taps.valid0 = taps.index >= 0;
  taps.valid1 = taps.index + 1 < extent;
  return taps;
}

// Pixels [first, last) that the cell [start, start + cell) overlaps inside [0, extent).
struct Span {
  int64_t first;
  int64_t last;
};

GDRAM_HOST_DEVICE Span area_span(double start, double cell, int64_t extent) {
  const double size = static_cast<double>(extent);
  double end = start + cell;
  if (!(end > 0.0 && start < size)) return Span{0, 0};  // also rejects NaN
  const double first = start < 0.0 ? 0.0 : start;
  end = end > size ? size : end;
  return Span{floor_bounded(first), ceil_bounded(end)};
}

// Length of pixel i covered by the cell [start, start + cell).
GDRAM_HOST_DEVICE double area_overlap(double start, double cell, int64_t i) {
  const double lo = start > static_cast<double>(i) ? start : static_cast<double>(i);
  const double end = start + cell;
  const double hi = end < static_cast<double>(i + 1) ? end : static_cast<double>(i + 1);
  return hi > lo ? hi - lo : 0.0;
}

// The pixel whose span [i, i + 1) holds coordinate t, or -1 outside [0, extent): the pixel that
// enters (or leaves) a cell's edge at t when the cell moves right (or down).
GDRAM_HOST_DEVICE int64_t pixel_at(double t, int64_t extent) {
  if (!(t >= 0.0 && t < static_cast<double>(extent))) return -1;
  return static_cast<int64_t>(t);  // t >= 0: truncation is floor
}

// Per-cell computations, templated on the image's element type and the accumulation type.
// `plane` points at one (sample, channel) image plane with element strides (stride_h, stride_w);
// gradient planes are contiguous (H, W) and receive their values through `add(index, value)`:
// a plain += on the CPU, an atomic add on the GPU.

template <typename acc_t, typename scalar_t>
GDRAM_HOST_DEVICE acc_t pixel(const scalar_t* plane, int64_t stride_h, int64_t stride_w, int64_t y, int64_t x, bool valid) {
  return valid ? static_cast<acc_t>(plane[y * stride_h + x * stride_w]) : acc_t(0);
}

// Bilinear sample at the taps (ty, tx).
template <typename acc_t, typename scalar_t>
GDRAM_HOST_DEVICE acc_t bilinear_value(const scalar_t* plane, int64_t stride_h, int64_t stride_w, const Taps& ty, const Taps& tx) {
  const int64_t y = ty.index, x = tx.index;
  return acc_t(ty.weight0 * tx.weight0) * pixel<acc_t>(plane, stride_h, stride_w, y, x, ty.valid0 && tx.valid0) +
      acc_t(ty.weight0 * tx.weight1) * pixel<acc_t>(plane, stride_h, stride_w, y, x + 1, ty.valid0 && tx.valid1) +
      acc_t(ty.weight1 * tx.weight0) * pixel<acc_t>(plane, stride_h, stride_w, y + 1, x, ty.valid1 && tx.valid0) +
      acc_t(ty.weight1 * tx.weight1) * pixel<acc_t>(plane, stride_h, stride_w, y + 1, x + 1, ty.valid1 && tx.valid1);
}

// Derivatives of the bilinear sample with respect to the sample point's pixel coordinates.
template <typename acc_t, typename scalar_t>
GDRAM_HOST_DEVICE void bilinear_slopes(
    const scalar_t* plane, int64_t stride_h, int64_t stride_w, const Taps& ty, const Taps& tx, acc_t& d_x, acc_t& d_y) {
  const int64_t y = ty.index, x = tx.index;
  const acc_t v00 = pixel<acc_t>(plane, stride_h, stride_w, y, x, ty.valid0 && tx.valid0);
  const acc_t v01 = pixel<acc_t>(plane, stride_h, stride_w, y, x + 1, ty.valid0 && tx.valid1);
  const acc_t v10 = pixel<acc_t>(plane, stride_h, stride_w, y + 1, x, ty.valid1 && tx.valid0);
  const acc_t v11 = pixel<acc_t>(plane, stride_h, stride_w, y + 1, x + 1, ty.valid1 && tx.valid1);
  d_x = acc_t(ty.weight0) * (v01 - v00) + acc_t(ty.weight1) * (v11 - v10);
  d_y = acc_t(tx.weight0) * (v10 - v00) + acc_t(tx.weight1) * (v11 - v01);
}

// Spreads `grad` (d loss / d sample) over the four taps of a gradient plane of width `width`.
template <typename acc_t, typename Add>
GDRAM_HOST_DEVICE void bilinear_scatter(const Taps& ty, const Taps& tx, acc_t grad, int64_t width, const Add& add) {
  const int64_t y0 = ty.index * width, y1 = y0 + width, x = tx.index;
  if (ty.valid0 && tx.valid0) add(y0 + x, grad * acc_t(ty.weight0 * tx.weight0));
  if (ty.valid0 && tx.valid1) add(y0 + x + 1, grad * acc_t(ty.weight0 * tx.weight1));
  if (ty.valid1 && tx.valid0) add(y1 + x, grad * acc_t(ty.weight1 * tx.weight0));
  if (ty.valid1 && tx.valid1) add(y1 + x + 1, grad * acc_t(ty.weight1 * tx.weight1));
}

// One area cell: its edges (left, top) in pixels, its width and height, and the image extent.
struct AreaCell {
  double left;
  double top;
  double cell_w;
  double cell_h;
  int64_t height;
  int64_t width;
};

// Mean of the plane over the cell, pixels weighted by the length of their span that it covers.
template <typename acc_t, typename scalar_t>
GDRAM_HOST_DEVICE acc_t area_value(const scalar_t* plane, int64_t stride_h, int64_t stride_w, const AreaCell& a) {
  const Span rows = area_span(a.top, a.cell_h, a.height), cols = area_span(a.left, a.cell_w, a.width);
  acc_t value = 0;
  for (int64_t y = rows.first; y < rows.last; ++y) {
    acc_t row = 0;
    for (int64_t x = cols.first; x < cols.last; ++x) {
      row += acc_t(area_overlap(a.left, a.cell_w, x)) * static_cast<acc_t>(plane[y * stride_h + x * stride_w]);
    }
    value += acc_t(area_overlap(a.top, a.cell_h, y)) * row;
  }
  return value * acc_t(1.0 / (a.cell_w * a.cell_h));
}

// What each edge of an area cell contributes to the derivatives of the cell's mean: moving the right
// edge by dt adds right * dt (the pixels entering there), moving the left edge by dt subtracts
// left * dt; likewise bottom and top. A translation moves both edges of an axis: d/dx = right - left.
template <typename acc_t>
struct AreaEdges {
  acc_t left, right, top, bottom;
};

template <typename acc_t, typename scalar_t>
GDRAM_HOST_DEVICE AreaEdges<acc_t> area_edges(const scalar_t* plane, int64_t stride_h, int64_t stride_w, const AreaCell& a) {
  const Span rows = area_span(a.top, a.cell_h, a.height), cols = area_span(a.left, a.cell_w, a.width);
  const int64_t left = pixel_at(a.left, a.width), right = pixel_at(a.left + a.cell_w, a.width);
  const int64_t top = pixel_at(a.top, a.height), bottom = pixel_at(a.top + a.cell_h, a.height);
  AreaEdges<acc_t> e{0, 0, 0, 0};
  for (int64_t y = rows.first; y < rows.last; ++y) {
    const acc_t w = acc_t(area_overlap(a.top, a.cell_h, y));
    e.left += w * pixel<acc_t>(plane, stride_h, stride_w, y, left, left >= 0);
    e.right += w * pixel<acc_t>(plane, stride_h, stride_w, y, right, right >= 0);
  }
  for (int64_t x = cols.first; x < cols.last; ++x) {
    const acc_t w = acc_t(area_overlap(a.left, a.cell_w, x));
    e.top += w * pixel<acc_t>(plane, stride_h, stride_w, top, x, top >= 0);
    e.bottom += w * pixel<acc_t>(plane, stride_h, stride_w, bottom, x, bottom >= 0);
  }
  const acc_t norm = acc_t(1.0 / (a.cell_w * a.cell_h));
  return AreaEdges<acc_t>{e.left * norm, e.right * norm, e.top * norm, e.bottom * norm};
}

// Spreads `grad` (d loss / d cell mean) over the pixels the cell covers.
template <typename acc_t, typename Add>
GDRAM_HOST_DEVICE void area_scatter(const AreaCell& a, acc_t grad, const Add& add) {
  const Span rows = area_span(a.top, a.cell_h, a.height), cols = area_span(a.left, a.cell_w, a.width);
  const acc_t scaled = grad * acc_t(1.0 / (a.cell_w * a.cell_h));
  for (int64_t y = rows.first; y < rows.last; ++y) {
    const acc_t row = scaled * acc_t(area_overlap(a.top, a.cell_h, y));
    for (int64_t x = cols.first; x < cols.last; ++x) add(y * a.width + x, row * acc_t(area_overlap(a.left, a.cell_w, x)));
  }
}

// How a cell's sample point (bilinear) or edges (area) move with its box's side: the cell at
// index k of n along an axis has its sample point at start + (k + 0.5) * side / n with
// start = centre - side / 2, so d point / d side = (k + 0.5) / n - 0.5; its near edge moves by
// k / n - 0.5 and its far edge by (k + 1) / n - 0.5.
GDRAM_HOST_DEVICE double point_per_side(int64_t k, int64_t n) {
  return (static_cast<double>(k) + 0.5) / static_cast<double>(n) - 0.5;
}

GDRAM_HOST_DEVICE double edge_per_side(int64_t k, int64_t n) {
  return static_cast<double>(k) / static_cast<double>(n) - 0.5;
}

GDRAM_HOST_DEVICE BoxFrame Boxes::frame(int64_t b, int64_t k, int64_t height, int64_t width) const {
  double side_w, side_h;
  if (sides.data != nullptr) {
    side_w = sides.at(b, k, 0);
    side_h = sides.at(b, k, 1);
  } else {
    side_w = side_h = scale_side(k);
  }
  constexpr double kHuge = 1.7976931348623157e308;  // DBL_MAX: also false for NaN and +inf
  if (!(side_w > 0.0 && side_w <= kHuge && side_h > 0.0 && side_h <= kHuge)) return BoxFrame{0.0, 0.0, 1.0, 1.0, false};
  return BoxFrame{
      glimpse_start(centres.at(b, k, 0), width, side_w),
      glimpse_start(centres.at(b, k, 1), height, side_h),
      side_w / static_cast<double>(cols),
      side_h / static_cast<double>(rows),
      true};
}

// The kernels of one device. Forward writes (B, K, C, rows, cols) into `output` (contiguous,
// allocated by the caller). Backward returns the images' gradient (or an empty tensor when
// images_grad is false) and the boxes' gradient (B, K, 4): d loss / d (normalised centre x, y,
// width, height) (or an empty tensor when neither centres_grad nor sides_grad); sides_grad asks for
// the last two, which the retina does not need.
using ForwardKernel = void (*)(const at::Tensor& images, const Boxes& boxes, at::Tensor& output);
using BackwardKernel = std::tuple<at::Tensor, at::Tensor> (*)(
    const at::Tensor& grad_output,
    const at::Tensor& images,
    const Boxes& boxes,
    bool images_grad,
    bool centres_grad,
    bool sides_grad);

// `tensor` itself when Coordinates can read its dtype, else a float64 copy (other floating dtypes).
at::Tensor readable_coordinates(const at::Tensor& tensor);

// The coordinates of a tensor of 2 (b, i) or 3 (b, k, i) dimensions (a dtype that
// readable_coordinates keeps), read in place; `stride_k` and `stride_i` of 0 repeat a value along that axis.
Coordinates coordinates(const at::Tensor& tensor, int64_t stride_k, int64_t stride_i);

// Raises unless the images are on `device`: the kernels of one device are registered for its tensors.
void check_device(const at::Tensor& images, c10::DeviceType device, const char* op);

// The operators on one device's kernels: argument checks (messages name the argument), the boxes,
// the output and the gradients' reduction to each operator's inputs.
at::Tensor retina_glimpse_forward(
    ForwardKernel kernel,
    c10::DeviceType device,
    const at::Tensor& images,
    const at::Tensor& locations,
    int64_t size,
    int64_t num_scales,
    double scale_factor,
    std::string_view mode,
    double base_size);

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
    bool locations_grad);

at::Tensor box_glimpse_forward(
    ForwardKernel kernel,
    c10::DeviceType device,
    const at::Tensor& images,
    const at::Tensor& centres,
    const at::Tensor& sides,
    c10::IntArrayRef size,
    std::string_view mode);

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
    bool sides_grad);

}  // namespace gdram_ext
