//! A baseline (sequential, Huffman) JPEG decoder that reproduces stb_image's output byte for
//! byte, so our pixels match llama.cpp's. Progressive, arithmetic, 12-bit, CMYK and RGB-coded
//! JPEGs are refused with an error; callers fall back to a general decoder.

mod huffman;
mod pixels;

use huffman::{BitReader, HuffmanTable};
use pixels::{idct_block, upsample_h2, upsample_hv2, upsample_v2, ycbcr_to_rgb};

/// Largest accepted width or height.
pub const MAX_SIDE: usize = 16384;

/// Largest total of component planes plus RGB output, a decompression-bomb guard.
pub const MAX_DECODE_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JpegError {
    #[error("corrupt JPEG: {0}")]
    Corrupt(&'static str),
    #[error("unsupported JPEG: {0}")]
    Unsupported(&'static str),
}

/// A decoded image: interleaved 8-bit RGB, `width * height * 3` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

const ZIGZAG: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    dc_table: usize,
    ac_table: usize,
    dc_pred: i32,
    /// Pixel buffer padded to whole MCUs.
    stride: usize,
    rows: usize,
    pixels: Vec<u8>,
}

struct Frame {
    width: usize,
    height: usize,
    h_max: usize,
    v_max: usize,
    mcus_x: usize,
    mcus_y: usize,
    components: Vec<Component>,
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    quant: [[u16; 64]; 4],
    dc: [Option<HuffmanTable>; 4],
    ac: [Option<HuffmanTable>; 4],
    restart_interval: usize,
    frame: Option<Frame>,
    adobe_transform: Option<u8>,
    scanned: bool,
}

/// Decodes a baseline JPEG to RGB exactly as stb_image (llama.cpp) does.
pub fn decode(data: &[u8]) -> Result<RgbImage, JpegError> {
    let mut decoder = Decoder {
        data,
        pos: 0,
        quant: [[0; 64]; 4],
        dc: Default::default(),
        ac: Default::default(),
        restart_interval: 0,
        frame: None,
        adobe_transform: None,
        scanned: false,
    };
    decoder.run()?;
    decoder.output()
}

fn be16(data: &[u8], pos: usize) -> Result<usize, JpegError> {
    match data.get(pos..pos + 2) {
        Some(b) => Ok(usize::from(b[0]) << 8 | usize::from(b[1])),
        None => Err(JpegError::Corrupt("truncated segment")),
    }
}

impl Decoder<'_> {
    fn run(&mut self) -> Result<(), JpegError> {
        if self.data.get(..2) != Some(&[0xFF, 0xD8]) {
            return Err(JpegError::Corrupt("missing SOI marker"));
        }
        self.pos = 2;
        loop {
            // Find the next marker, skipping fill bytes.
            while self.data.get(self.pos) != Some(&0xFF) {
                if self.pos >= self.data.len() {
                    return self.finish();
                }
                self.pos += 1;
            }
            while self.data.get(self.pos) == Some(&0xFF) {
                self.pos += 1;
            }
            let Some(&marker) = self.data.get(self.pos) else {
                return self.finish();
            };
            self.pos += 1;
            match marker {
                0xD9 => return self.finish(),
                0xD0..=0xD7 | 0x01 => {}
                _ => {
                    let len = be16(self.data, self.pos)?;
                    if len < 2 || self.pos + len > self.data.len() {
                        return Err(JpegError::Corrupt("segment length out of range"));
                    }
                    let body = &self.data[self.pos + 2..self.pos + len];
                    self.pos += len;
                    match marker {
                        0xC0 | 0xC1 => self.read_frame(body)?,
                        0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                            return Err(JpegError::Unsupported("not a baseline Huffman JPEG"));
                        }
                        0xC4 => self.read_huffman(body)?,
                        0xDB => self.read_quant(body)?,
                        0xDD => self.restart_interval = be16(body, 0)?,
                        0xEE if body.len() >= 12 && body.starts_with(b"Adobe") => {
                            self.adobe_transform = Some(body[11]);
                        }
                        0xDA => self.read_scan(body)?,
                        _ => {}
                    }
                }
            }
        }
    }

    fn finish(&self) -> Result<(), JpegError> {
        if self.scanned {
            Ok(())
        } else {
            Err(JpegError::Corrupt("no image data"))
        }
    }

    fn read_quant(&mut self, mut body: &[u8]) -> Result<(), JpegError> {
        while let Some(&pq_tq) = body.first() {
            let (precision, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
            if id > 3 || precision > 1 {
                return Err(JpegError::Corrupt("bad quantization table"));
            }
            let size = if precision == 0 { 64 } else { 128 };
            let values = body
                .get(1..1 + size)
                .ok_or(JpegError::Corrupt("truncated quantization table"))?;
            for (i, &natural) in ZIGZAG.iter().enumerate() {
                self.quant[id][usize::from(natural)] = if precision == 0 {
                    u16::from(values[i])
                } else {
                    u16::from(values[2 * i]) << 8 | u16::from(values[2 * i + 1])
                };
            }
            body = &body[1 + size..];
        }
        Ok(())
    }

    fn read_huffman(&mut self, mut body: &[u8]) -> Result<(), JpegError> {
        while let Some(&tc_th) = body.first() {
            let (class, id) = (tc_th >> 4, usize::from(tc_th & 15));
            if class > 1 || id > 3 {
                return Err(JpegError::Corrupt("bad Huffman table id"));
            }
            let counts: [u8; 16] = body
                .get(1..17)
                .and_then(|c| c.try_into().ok())
                .ok_or(JpegError::Corrupt("truncated Huffman table"))?;
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let values = body
                .get(17..17 + total)
                .ok_or(JpegError::Corrupt("truncated Huffman table"))?;
            let table = HuffmanTable::new(&counts, values)?;
            if class == 0 {
                self.dc[id] = Some(table);
            } else {
                self.ac[id] = Some(table);
            }
            body = &body[17 + total..];
        }
        Ok(())
    }

    fn read_frame(&mut self, body: &[u8]) -> Result<(), JpegError> {
        if self.frame.is_some() {
            return Err(JpegError::Corrupt("two frame headers"));
        }
        if body.len() < 6 || body[0] != 8 {
            return Err(JpegError::Unsupported("sample precision other than 8 bits"));
        }
        let height = be16(body, 1)?;
        let width = be16(body, 3)?;
        if width == 0 || height == 0 {
            return Err(JpegError::Unsupported("zero width or height (DNL)"));
        }
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(JpegError::Unsupported("image side over 16384"));
        }
        // Every 8x8 block costs at least one bit of entropy-coded data: a frame larger than
        // the file can describe would only be grey filler, allocated and decoded for nothing.
        if width * height > self.data.len().saturating_mul(512).max(1 << 20) {
            return Err(JpegError::Corrupt(
                "frame larger than the file can describe",
            ));
        }
        let count = usize::from(body[5]);
        if count != 1 && count != 3 {
            return Err(JpegError::Unsupported("component count other than 1 or 3"));
        }
        if body.len() < 6 + 3 * count {
            return Err(JpegError::Corrupt("truncated frame header"));
        }
        let mut components = Vec::with_capacity(count);
        for c in body[6..6 + 3 * count].chunks_exact(3) {
            let (h, v, quant) = (
                usize::from(c[1] >> 4),
                usize::from(c[1] & 15),
                usize::from(c[2]),
            );
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || quant > 3 {
                return Err(JpegError::Corrupt("bad component sampling or table"));
            }
            components.push(Component {
                id: c[0],
                h,
                v,
                quant,
                dc_table: 0,
                ac_table: 0,
                dc_pred: 0,
                stride: 0,
                rows: 0,
                pixels: Vec::new(),
            });
        }
        let h_max = components.iter().map(|c| c.h).max().unwrap_or(1);
        let v_max = components.iter().map(|c| c.v).max().unwrap_or(1);
        let mcus_x = width.div_ceil(8 * h_max);
        let mcus_y = height.div_ceil(8 * v_max);
        let planes: usize = components
            .iter()
            .map(|c| mcus_x * c.h * 8 * mcus_y * c.v * 8)
            .sum();
        if planes + width * height * 3 > MAX_DECODE_BYTES {
            return Err(JpegError::Unsupported("image needs over 1 GiB to decode"));
        }
        for c in &mut components {
            c.stride = mcus_x * c.h * 8;
            c.rows = mcus_y * c.v * 8;
            c.pixels = vec![0; c.stride * c.rows];
        }
        self.frame = Some(Frame {
            width,
            height,
            h_max,
            v_max,
            mcus_x,
            mcus_y,
            components,
        });
        Ok(())
    }

    fn read_scan(&mut self, body: &[u8]) -> Result<(), JpegError> {
        let frame = self
            .frame
            .as_mut()
            .ok_or(JpegError::Corrupt("scan before frame header"))?;
        let count = usize::from(
            *body
                .first()
                .ok_or(JpegError::Corrupt("empty scan header"))?,
        );
        if count == 0 || count > frame.components.len() || body.len() < 4 + 2 * count {
            return Err(JpegError::Corrupt("bad scan header"));
        }
        let mut order = Vec::with_capacity(count);
        for s in body[1..1 + 2 * count].chunks_exact(2) {
            let index = frame
                .components
                .iter()
                .position(|c| c.id == s[0])
                .ok_or(JpegError::Corrupt("scan names an unknown component"))?;
            let (dc, ac) = (usize::from(s[1] >> 4), usize::from(s[1] & 15));
            if dc > 3 || ac > 3 || self.dc[dc].is_none() || self.ac[ac].is_none() {
                return Err(JpegError::Corrupt("scan uses a missing Huffman table"));
            }
            let comp = &mut frame.components[index];
            comp.dc_table = dc;
            comp.ac_table = ac;
            comp.dc_pred = 0;
            order.push(index);
        }
        let tail = &body[1 + 2 * count..];
        if tail[0] != 0 || tail[1] != 63 || tail[2] != 0 {
            return Err(JpegError::Unsupported(
                "spectral selection of a progressive scan",
            ));
        }

        let mut reader = BitReader::new(self.data, self.pos);
        let mut coeffs = [0i16; 64];
        let mut block = [0u8; 64];
        let mut todo = if self.restart_interval > 0 {
            self.restart_interval
        } else {
            usize::MAX
        };
        let mut decode_at = |reader: &mut BitReader,
                             comp: &mut Component,
                             bx: usize,
                             by: usize|
         -> Result<(), JpegError> {
            decode_block(reader, comp, &self.dc, &self.ac, &self.quant, &mut coeffs)?;
            idct_block(&coeffs, &mut block);
            for (r, row) in block.chunks_exact(8).enumerate() {
                let start = (by * 8 + r) * comp.stride + bx * 8;
                comp.pixels[start..start + 8].copy_from_slice(row);
            }
            Ok(())
        };

        let single = count == 1;
        let (units_x, units_y) = if single {
            let c = &frame.components[order[0]];
            let w = (frame.width * c.h).div_ceil(frame.h_max);
            let h = (frame.height * c.v).div_ceil(frame.v_max);
            (w.div_ceil(8), h.div_ceil(8))
        } else {
            (frame.mcus_x, frame.mcus_y)
        };
        for my in 0..units_y {
            for mx in 0..units_x {
                if single {
                    decode_at(&mut reader, &mut frame.components[order[0]], mx, my)?;
                } else {
                    for &index in &order {
                        let comp = &mut frame.components[index];
                        for v in 0..comp.v {
                            for h in 0..comp.h {
                                let (bx, by) = (mx * comp.h + h, my * comp.v + v);
                                decode_at(&mut reader, comp, bx, by)?;
                            }
                        }
                    }
                }
                todo -= 1;
                if todo == 0 {
                    todo = self.restart_interval;
                    reader.restart();
                    for &index in &order {
                        frame.components[index].dc_pred = 0;
                    }
                }
            }
        }
        self.pos = reader.position();
        self.scanned = true;
        Ok(())
    }

    fn output(&self) -> Result<RgbImage, JpegError> {
        let frame = self
            .frame
            .as_ref()
            .ok_or(JpegError::Corrupt("no frame header"))?;
        let (width, height) = (frame.width, frame.height);
        let mut rgb = vec![0u8; width * height * 3];
        if frame.components.len() == 1 {
            let c = &frame.components[0];
            for y in 0..height {
                let src = &c.pixels[y * c.stride..y * c.stride + width];
                for (out, &g) in rgb[y * width * 3..(y + 1) * width * 3]
                    .chunks_exact_mut(3)
                    .zip(src)
                {
                    out.fill(g);
                }
            }
            return Ok(RgbImage { width, height, rgb });
        }
        let ids: Vec<u8> = frame.components.iter().map(|c| c.id).collect();
        if ids == b"RGB" || self.adobe_transform == Some(0) {
            return Err(JpegError::Unsupported("RGB-coded JPEG"));
        }
        let mut rows: Vec<Vec<u8>> = vec![vec![0; width + 8]; 3];
        for y in 0..height {
            for (k, c) in frame.components.iter().enumerate() {
                upsample_row(frame, c, y, &mut rows[k])?;
            }
            let out = &mut rgb[y * width * 3..(y + 1) * width * 3];
            for (x, px) in out.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&ycbcr_to_rgb(rows[0][x], rows[1][x], rows[2][x]));
            }
        }
        Ok(RgbImage { width, height, rgb })
    }
}

/// Component row `y` of the output, upsampled to full resolution the way stb does.
fn upsample_row(
    frame: &Frame,
    c: &Component,
    y: usize,
    out: &mut Vec<u8>,
) -> Result<(), JpegError> {
    let hs = frame.h_max / c.h;
    let vs = frame.v_max / c.v;
    if hs * c.h != frame.h_max || vs * c.v != frame.v_max {
        return Err(JpegError::Unsupported("non-integer sampling ratio"));
    }
    let w_lores = frame.width.div_ceil(hs);
    let comp_rows = (frame.height * c.v).div_ceil(frame.v_max);
    let row = |r: usize| &c.pixels[r * c.stride..r * c.stride + w_lores];
    out.resize(w_lores * hs.max(1) + 8, 0);
    // stb walks a "near" row (y / vs) and a "far" row above or below it, clamped to the image.
    let near_index = y / vs;
    let bottom_half = (y % vs) >= vs / 2 && vs == 2;
    let far_index = if vs != 2 {
        near_index
    } else if bottom_half {
        (near_index + 1).min(comp_rows - 1)
    } else {
        near_index.saturating_sub(1)
    };
    let (near, far) = (row(near_index), row(far_index));
    match (hs, vs) {
        (1, 1) => out[..w_lores].copy_from_slice(near),
        (2, 2) => upsample_hv2(near, far, &mut out[..w_lores * 2]),
        (2, 1) => upsample_h2(near, &mut out[..w_lores * 2]),
        (1, 2) => upsample_v2(near, far, &mut out[..w_lores]),
        _ => {
            for (x, o) in out[..w_lores * hs].iter_mut().enumerate() {
                *o = near[x / hs];
            }
        }
    }
    Ok(())
}

fn decode_block(
    reader: &mut BitReader,
    comp: &mut Component,
    dc_tables: &[Option<HuffmanTable>; 4],
    ac_tables: &[Option<HuffmanTable>; 4],
    quant: &[[u16; 64]; 4],
    coeffs: &mut [i16; 64],
) -> Result<(), JpegError> {
    let (Some(dc_table), Some(ac_table)) = (&dc_tables[comp.dc_table], &ac_tables[comp.ac_table])
    else {
        return Err(JpegError::Corrupt("missing Huffman table"));
    };
    let q = &quant[comp.quant];
    coeffs.fill(0);
    let size = reader.decode(dc_table)?;
    if size > 16 {
        return Err(JpegError::Corrupt("bad DC magnitude"));
    }
    let diff = reader.extend(u32::from(size));
    comp.dc_pred = comp
        .dc_pred
        .checked_add(diff)
        .ok_or(JpegError::Corrupt("DC overflow"))?;
    coeffs[0] = comp.dc_pred.wrapping_mul(i32::from(q[0])) as i16;
    let mut k = 1;
    while k < 64 {
        let rs = reader.decode(ac_table)?;
        let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
        if size == 0 {
            if rs != 0xF0 {
                break;
            }
            k += 16;
            continue;
        }
        k += run;
        if k > 63 {
            return Err(JpegError::Corrupt("AC coefficient index past 63"));
        }
        let zig = usize::from(ZIGZAG[k]);
        coeffs[zig] = reader.extend(size).wrapping_mul(i32::from(q[zig])) as i16;
        k += 1;
    }
    Ok(())
}
