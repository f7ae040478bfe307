//! Drawing an item: its shape's path in the unit square, rotated, scaled
//! and moved to its location (`SIMPLE_SHAPES.md`), filled anti-aliased in
//! its colour on black by `tiny-skia`, y pointing up.

use crate::attributes::{Attributes, IMAGE_SIZE};
use tiny_skia::{FillRule, Paint, PathBuilder, Pixmap, Transform};

/// One segment of a shape's outline in the unit square.
enum Seg {
    Line((f32, f32)),
    Cubic((f32, f32), (f32, f32), (f32, f32)),
}

/// The outline of `class`, starting point then segments (closed).
fn outline(class: usize) -> ((f32, f32), Vec<Seg>) {
    match class {
        // Diamond.
        0 => (
            (0.5, 0.0),
            vec![
                Seg::Line((1.0, 0.3)),
                Seg::Line((0.5, 1.0)),
                Seg::Line((0.0, 0.3)),
            ],
        ),
        // Egg: four cubic Bézier segments.
        1 => (
            (0.5, 0.0),
            vec![
                Seg::Cubic((0.8, 0.0), (0.9, 0.1), (0.9, 0.3)),
                Seg::Cubic((0.9, 0.5), (0.7, 1.0), (0.5, 1.0)),
                Seg::Cubic((0.3, 1.0), (0.1, 0.5), (0.1, 0.3)),
                Seg::Cubic((0.1, 0.1), (0.2, 0.0), (0.5, 0.0)),
            ],
        ),
        // Triangle.
        _ => (
            (0.5, 1.0),
            vec![Seg::Line((0.2, 0.0)), Seg::Line((0.8, 0.0))],
        ),
    }
}

/// Draws `a` into `rgb` (`32 * 32 * 3` bytes, rows top to bottom, pixels
/// interleaved). The shape's unit-square point `p` goes to
/// `(x, y) + size * R(rotation) * (p - (0.5, 0.5))`, then to the pixel
/// grid with y up: row = 32 - y, column = x.
pub fn draw(a: &Attributes, rgb: &mut [u8]) -> Result<(), String> {
    let n = IMAGE_SIZE as u32;
    let mut pixmap = Pixmap::new(n, n).ok_or("cannot allocate a 32x32 image")?;
    pixmap.fill(tiny_skia::Color::BLACK);
    let (cos, sin) = (a.rotation.cos(), a.rotation.sin());
    let place = |(px, py): (f32, f32)| {
        let (ux, uy) = (px - 0.5, py - 0.5);
        let x = a.x + a.size * (cos * ux - sin * uy);
        let y = a.y + a.size * (sin * ux + cos * uy);
        (x, IMAGE_SIZE as f32 - y)
    };
    let (start, segments) = outline(a.class);
    let mut path = PathBuilder::new();
    let (x0, y0) = place(start);
    path.move_to(x0, y0);
    for seg in segments {
        match seg {
            Seg::Line(p) => {
                let (x, y) = place(p);
                path.line_to(x, y);
            }
            Seg::Cubic(c1, c2, p) => {
                let ((ax, ay), (bx, by), (x, y)) = (place(c1), place(c2), place(p));
                path.cubic_to(ax, ay, bx, by, x, y);
            }
        }
    }
    path.close();
    let path = path.finish().ok_or("the shape's outline is degenerate")?;
    let mut paint = Paint::default();
    paint.set_color_rgba8(a.rgb[0], a.rgb[1], a.rgb[2], 255);
    paint.anti_alias = true;
    pixmap.fill_path(
        &path,
        &paint,
        FillRule::Winding,
        Transform::identity(),
        None,
    );
    // Opaque paint over an opaque background: premultiplied is straight RGB.
    for (o, p) in rgb.chunks_exact_mut(3).zip(pixmap.data().chunks_exact(4)) {
        o.copy_from_slice(&p[..3]);
    }
    Ok(())
}
