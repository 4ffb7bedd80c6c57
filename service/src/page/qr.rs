//! QR codes of short URLs (`qrcode` crate), as SVG (the default: small and
//! sharp at any size) or PNG (`?format=png`, for tools that cannot take
//! SVG; written with the `png` crate rather than pulling in `image`).

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module of a PNG.
const PNG_SCALE: usize = 8;
/// Light modules around the code (the standard's quiet zone).
const QUIET_ZONE: usize = 4;
/// Smallest side of an SVG, in its own units.
const SVG_MIN_SIDE: u32 = 256;

/// The image format asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `image/svg+xml`.
    Svg,
    /// `image/png`.
    Png,
}

impl Format {
    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Svg => "image/svg+xml",
            Format::Png => "image/png",
        }
    }
}

/// The `Content-Security-Policy` of a QR code: an SVG opened on its own
/// must not run or load anything.
pub const QR_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// Why a QR code could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QrError {
    /// The text does not fit in a QR code (over ~2 KB at level M).
    TooLong,
    /// The PNG encoder failed.
    Png(String),
}

impl std::fmt::Display for QrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QrError::TooLong => f.write_str("the short URL is too long for a QR code"),
            QrError::Png(e) => write!(f, "PNG encoding failed: {e}"),
        }
    }
}

impl std::error::Error for QrError {}

/// The QR code of `text` in `format`. Error correction level M (15 %): a
/// printed code survives a smudge, and a short URL stays a small code.
///
/// # Errors
/// [`QrError`] when `text` does not fit or the PNG cannot be written.
pub fn render(text: &str, format: Format) -> Result<Vec<u8>, QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|_| QrError::TooLong)?;
    match format {
        Format::Svg => Ok(code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(SVG_MIN_SIDE, SVG_MIN_SIDE)
            .quiet_zone(true)
            .build()
            .into_bytes()),
        Format::Png => png(code.width(), &code.to_colors()),
    }
}

/// An 8-bit greyscale PNG of `modules` (`width` × `width`), scaled and
/// with a quiet zone.
fn png(width: usize, modules: &[Color]) -> Result<Vec<u8>, QrError> {
    let side = (width + 2 * QUIET_ZONE) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, _) in modules
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == Color::Dark)
    {
        let (mx, my) = (i % width + QUIET_ZONE, i / width + QUIET_ZONE);
        for y in my * PNG_SCALE..(my + 1) * PNG_SCALE {
            if let Some(row) =
                pixels.get_mut(y * side + mx * PNG_SCALE..y * side + (mx + 1) * PNG_SCALE)
            {
                row.fill(0);
            }
        }
    }
    let side = u32::try_from(side).map_err(|e| QrError::Png(e.to_string()))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| QrError::Png(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| QrError::Png(e.to_string()))?;
    writer.finish().map_err(|e| QrError::Png(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Decodes the one QR code in a greyscale image (`rqrr`).
    pub(crate) fn decode_grey(width: usize, height: usize, grey: &[u8]) -> String {
        let mut image =
            rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| grey[y * width + x]);
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the image");
        grids[0].decode().expect("the QR code decodes").1
    }

    /// Decodes a PNG's QR code.
    pub(crate) fn decode_png(bytes: &[u8]) -> String {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let channels = info.color_type.samples();
        let grey: Vec<u8> = buf[..info.buffer_size()]
            .chunks(channels)
            .map(|px| px[0])
            .collect();
        decode_grey(info.width as usize, info.height as usize, &grey)
    }

    /// Rasterises the SVG `qrcode` writes (one background `rect`, one
    /// `path` of `M x y h w v h H x V y` squares) and decodes it, so the
    /// test reads the bytes served, not the code they came from.
    pub(crate) fn decode_svg(svg: &str) -> String {
        let view = svg.split("viewBox=\"0 0 ").nth(1).unwrap();
        let mut dims = view.split(['"', ' ']).map(|n| n.parse::<usize>().unwrap());
        let (w, h) = (dims.next().unwrap(), dims.next().unwrap());
        let d = svg
            .split(" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let mut grey = vec![255u8; w * h];
        for square in d.split('M').filter(|s| !s.is_empty()) {
            // "x y" "h" w "v" h "H" x "V" y
            let nums: Vec<usize> = square
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|n| n.parse().unwrap())
                .collect();
            let (x, y, sw, sh) = (nums[0], nums[1], nums[2], nums[3]);
            for row in y..y + sh {
                grey[row * w + x..row * w + x + sw].fill(0);
            }
        }
        decode_grey(w, h, &grey)
    }

    #[test]
    fn svg_and_png_decode_to_the_text() {
        for text in [
            "https://sho.rt/abcdefg",
            "http://127.0.0.1:5000/my-alias_01",
        ] {
            let svg = render(text, Format::Svg).unwrap();
            let svg = String::from_utf8(svg).unwrap();
            assert!(svg.contains("<svg") && !svg.contains("<script"));
            assert_eq!(decode_svg(&svg), text);
            let png = render(text, Format::Png).unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            assert_eq!(decode_png(&png), text);
        }
    }

    #[test]
    fn text_too_long_for_a_qr_code_is_an_error_not_a_panic() {
        let long = "x".repeat(4000);
        assert_eq!(render(&long, Format::Svg), Err(QrError::TooLong));
        assert_eq!(render(&long, Format::Png), Err(QrError::TooLong));
    }
}
