//! Where a gRPC stream's messages end, read as its DATA frames pass: for a request,
//! when its first message is whole; for an answer, how many messages it has given.

/// Where a stream's gRPC messages stand (each a 5-byte prefix, a flag and a big-endian
/// length, then that many bytes), to count those that ended.
#[derive(Debug, Default)]
pub struct MessageEnds {
    prefix: [u8; 5],
    /// Bytes of the current message's prefix seen.
    filled: usize,
    /// Bytes of the current message still to come after its prefix.
    left: u64,
}

impl MessageEnds {
    /// Notes `data`, the next bytes of the stream; how many messages ended in it.
    pub fn ended_in(&mut self, mut data: &[u8]) -> usize {
        let mut ended = 0;
        while !data.is_empty() {
            if self.filled < self.prefix.len() {
                let take = (self.prefix.len() - self.filled).min(data.len());
                self.prefix[self.filled..self.filled + take].copy_from_slice(&data[..take]);
                self.filled += take;
                data = &data[take..];
                if self.filled < self.prefix.len() {
                    break;
                }
                let [_, len @ ..] = self.prefix;
                self.left = u64::from(u32::from_be_bytes(len));
            }
            let take = usize::try_from(self.left).unwrap_or(usize::MAX).min(data.len());
            self.left -= take as u64;
            data = &data[take..];
            if self.left == 0 {
                ended += 1;
                self.filled = 0;
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_messages_are_counted_as_they_end_in_whatever_pieces_they_come() {
        let message = |body: &[u8]| {
            let mut m = vec![0];
            m.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
            m.extend_from_slice(body);
            m
        };
        let mut answers = MessageEnds::default();
        let two: Vec<u8> = [message(b"ok"), message(b"")].concat();
        assert_eq!(answers.ended_in(&two), 2, "two whole messages in one frame, one of them empty");
        let big = message(&[7; 40_000]);
        let (first, rest) = big.split_at(16_384);
        let (second, third) = rest.split_at(16_384);
        assert_eq!(answers.ended_in(first), 0, "a message of three frames");
        assert_eq!(answers.ended_in(second), 0);
        assert_eq!(answers.ended_in(third), 1);
        let next = message(b"xyz");
        assert_eq!(answers.ended_in(&next[..3]), 0, "a prefix cut in two");
        assert_eq!(answers.ended_in(&next[3..6]), 0);
        assert_eq!(answers.ended_in(&[&next[6..], &message(b"a")[..]].concat()), 2);
        assert_eq!(answers.ended_in(&[]), 0);
    }
}
