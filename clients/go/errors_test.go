package keybroker

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "keybroker.dev/client/keybrokerv1"
)

// TestReasonTableIsTheEnum: every ErrorReason value but UNSPECIFIED has kinds, and nothing else does.
func TestReasonTableIsTheEnum(t *testing.T) {
	for number, name := range pb.ErrorReason_name {
		reason := pb.ErrorReason(number)
		_, mapped := kindsByReason[reason]
		if reason == pb.ErrorReason_ERROR_REASON_UNSPECIFIED {
			if mapped {
				t.Errorf("%s is never sent and must not be mapped", name)
			}
			continue
		}
		if !mapped || len(kindsByReason[reason]) == 0 {
			t.Errorf("%s has no error kinds in kindsByReason", name)
		}
	}
	for reason := range kindsByReason {
		if _, known := pb.ErrorReason_name[int32(reason)]; !known {
			t.Errorf("kindsByReason maps %d, which is not an ErrorReason value", reason)
		}
	}
}

// TestEveryReasonWordPicksItsKinds: the word on the trailer decides, whatever the status code.
func TestEveryReasonWordPicksItsKinds(t *testing.T) {
	for reason, kinds := range kindsByReason {
		word := strings.TrimPrefix(reason.String(), reasonPrefix)
		e := fromRPC("op", status.Error(codes.Unknown, "details"), metadata.Pairs(ReasonMetadataKey, word))
		if e.Reason != word {
			t.Errorf("reason %q kept as %q", word, e.Reason)
		}
		for _, kind := range kinds {
			if !errors.Is(e, kind) {
				t.Errorf("reason %q: error does not match %v", word, kind)
			}
		}
		if reason != pb.ErrorReason_ERROR_REASON_INTERNAL && errors.Is(e, ErrInternal) {
			t.Errorf("reason %q fell back to ErrInternal", word)
		}
	}
}

// TestRateLimitedIsResourceExhausted: a policy rate limit is caught like any exhausted budget.
func TestRateLimitedIsResourceExhausted(t *testing.T) {
	e := fromRPC("encrypt", status.Error(codes.Unknown, "slow down"), metadata.Pairs(ReasonMetadataKey, "RATE_LIMITED"))
	if !errors.Is(e, ErrResourceExhausted) {
		t.Errorf("RATE_LIMITED gave %v, want ErrResourceExhausted", e)
	}
}

// TestWordsOutsideTheEnumFallBackToTheCode: only the exact wire word maps, not the enum name.
func TestWordsOutsideTheEnumFallBackToTheCode(t *testing.T) {
	for _, word := range []string{"ERROR_REASON_DECRYPTION_FAILED", "DECRYPTION_FAILURE"} {
		e := fromRPC("decrypt", status.Error(codes.InvalidArgument, "bad"), metadata.Pairs(ReasonMetadataKey, word))
		if errors.Is(e, ErrDecryption) || !errors.Is(e, ErrInvalidArgument) {
			t.Errorf("word %q: got kinds of %v, want ErrInvalidArgument only", word, e)
		}
	}
}
