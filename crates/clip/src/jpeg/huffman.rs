//! Entropy-coded segment reading: bit reader with byte-stuffing and Huffman tables.

use super::JpegError;

/// A canonical Huffman table decoded code by code (lengths 1..=16).
#[derive(Clone, Default)]
pub struct HuffmanTable {
    /// Largest code of each length, or -1 when the length has none.
    max_code: [i32; 17],
    /// Index into `values` of the first code of each length, minus that code.
    offset: [i32; 17],
    values: Vec<u8>,
}

impl HuffmanTable {
    pub fn new(counts: &[u8; 16], values: &[u8]) -> Result<Self, JpegError> {
        let mut table = HuffmanTable {
            max_code: [-1; 17],
            offset: [0; 17],
            values: values.to_vec(),
        };
        let mut code = 0i32;
        let mut index = 0i32;
        for len in 1..=16 {
            let count = i32::from(counts[len - 1]);
            table.offset[len] = index - code;
            if count > 0 {
                code += count;
                index += count;
                table.max_code[len] = code - 1;
            }
            if code > (1 << len) {
                return Err(JpegError::Corrupt("bad Huffman code lengths"));
            }
            code <<= 1;
        }
        Ok(table)
    }
}

/// Reads bits MSB-first from entropy-coded data, feeding zeros once a marker is reached (as stb does).
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    bits: u32,
    count: u32,
    /// Set when a marker (other than a stuffed 0xFF00) stopped the data.
    pub marker: Option<u8>,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            bits: 0,
            count: 0,
            marker: None,
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    fn fill(&mut self) {
        while self.count <= 24 {
            let mut byte = 0u32;
            if self.marker.is_none() {
                match self.data.get(self.pos) {
                    Some(&0xFF) => match self.data.get(self.pos + 1) {
                        Some(&0) => {
                            byte = 0xFF;
                            self.pos += 2;
                        }
                        Some(&m) => self.marker = Some(m),
                        None => self.marker = Some(0),
                    },
                    Some(&b) => {
                        byte = u32::from(b);
                        self.pos += 1;
                    }
                    None => self.marker = Some(0),
                }
            }
            self.bits |= byte << (24 - self.count);
            self.count += 8;
        }
    }

    pub fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.fill();
        let v = self.bits >> (32 - n);
        self.bits <<= n;
        self.count -= n;
        v
    }

    /// Reads `n` bits and sign-extends them per JPEG's magnitude coding.
    pub fn extend(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        let v = self.bits(n) as i32;
        if v < (1 << (n - 1)) {
            v - (1 << n) + 1
        } else {
            v
        }
    }

    pub fn decode(&mut self, table: &HuffmanTable) -> Result<u8, JpegError> {
        let mut code = 0i32;
        for len in 1..=16 {
            code = (code << 1) | self.bits(1) as i32;
            if code <= table.max_code[len] {
                let index = (table.offset[len] + code) as usize;
                return table
                    .values
                    .get(index)
                    .copied()
                    .ok_or(JpegError::Corrupt("Huffman value out of range"));
            }
        }
        Err(JpegError::Corrupt("bad Huffman code"))
    }

    /// Drops buffered bits and skips a pending RSTn marker (restart interval boundary).
    pub fn restart(&mut self) {
        self.bits = 0;
        self.count = 0;
        if self.marker.is_none() {
            // Scan forward to the marker, as the stream may carry padding.
            while self.pos + 1 < self.data.len()
                && !(self.data[self.pos] == 0xFF && self.data[self.pos + 1] != 0)
            {
                self.pos += 1;
            }
            if self.pos + 1 < self.data.len() {
                self.marker = Some(self.data[self.pos + 1]);
            }
        }
        if let Some(m) = self.marker
            && (0xD0..=0xD7).contains(&m)
        {
            self.pos += 2;
            self.marker = None;
        }
    }
}
