package keybroker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "keybroker.dev/client/keybrokerv1"
)

// Trailing metadata keys the daemon sets on a failed call.
const (
	ReasonMetadataKey    = "keybroker-error-reason"
	RequestIDMetadataKey = "keybroker-request-id"
)

// Sentinel errors, matched with errors.Is against any error a Client returns.
var (
	// ErrDecryption: the envelope could not be opened (wrong context, tampered, not an envelope).
	ErrDecryption = errors.New("keybroker: decryption failed")
	// ErrVerification: a signature or MAC did not verify.
	ErrVerification = errors.New("keybroker: verification failed")
	// ErrInvalidArgument: the request was refused as invalid.
	ErrInvalidArgument = errors.New("keybroker: invalid argument")
	// ErrPermissionDenied: the caller may not use this key or operation.
	ErrPermissionDenied = errors.New("keybroker: permission denied")
	// ErrUnauthenticated: the caller could not be identified (also matches ErrPermissionDenied).
	ErrUnauthenticated = errors.New("keybroker: unauthenticated")
	// ErrKeyNotFound: no such logical key (also matches ErrKMS).
	ErrKeyNotFound = errors.New("keybroker: key not found")
	// ErrKeyState: the key is disabled or has the wrong purpose for the operation.
	ErrKeyState = errors.New("keybroker: key state")
	// ErrResourceExhausted: the daemon is over a limit; retry later.
	ErrResourceExhausted = errors.New("keybroker: resource exhausted")
	// ErrKMS: the key-management backend failed.
	ErrKMS = errors.New("keybroker: KMS error")
	// ErrKMSUnavailable: the backend cannot be reached (also matches ErrKMS); retryable.
	ErrKMSUnavailable = errors.New("keybroker: KMS unavailable")
	// ErrKMSAuthentication: the daemon's backend credentials were refused (also matches ErrKMS).
	ErrKMSAuthentication = errors.New("keybroker: KMS authentication failed")
	// ErrUnavailable: the daemon cannot be reached or did not answer in time.
	ErrUnavailable = errors.New("keybroker: daemon unavailable")
	// ErrUnsupported: the daemon does not implement the operation.
	ErrUnsupported = errors.New("keybroker: unsupported operation")
	// ErrInternal: any other failure; the daemon's log has the detail under RequestID.
	ErrInternal = errors.New("keybroker: internal error")
)

// kindsByReason is the reason table. It is keyed by the proto's ErrorReason, so only a word the
// daemon can send has an entry; errors_test.go checks that every value has one.
var kindsByReason = map[pb.ErrorReason][]error{
	pb.ErrorReason_ERROR_REASON_INTERNAL:             {ErrInternal},
	pb.ErrorReason_ERROR_REASON_INVALID_ARGUMENT:     {ErrInvalidArgument},
	pb.ErrorReason_ERROR_REASON_DECRYPTION_FAILED:    {ErrDecryption},
	pb.ErrorReason_ERROR_REASON_VERIFICATION_FAILED:  {ErrVerification},
	pb.ErrorReason_ERROR_REASON_UNAUTHENTICATED:      {ErrUnauthenticated, ErrPermissionDenied},
	pb.ErrorReason_ERROR_REASON_PERMISSION_DENIED:    {ErrPermissionDenied},
	pb.ErrorReason_ERROR_REASON_KEY_NOT_FOUND:        {ErrKeyNotFound, ErrKMS},
	pb.ErrorReason_ERROR_REASON_KEY_STATE:            {ErrKeyState},
	pb.ErrorReason_ERROR_REASON_WRONG_KEY_PURPOSE:    {ErrKeyState},
	pb.ErrorReason_ERROR_REASON_RESOURCE_EXHAUSTED:   {ErrResourceExhausted},
	pb.ErrorReason_ERROR_REASON_RATE_LIMITED:         {ErrResourceExhausted},
	pb.ErrorReason_ERROR_REASON_KMS_ERROR:            {ErrKMS},
	pb.ErrorReason_ERROR_REASON_KMS_UNAVAILABLE:      {ErrKMSUnavailable, ErrKMS},
	pb.ErrorReason_ERROR_REASON_KMS_AUTHENTICATION:   {ErrKMSAuthentication, ErrKMS},
	pb.ErrorReason_ERROR_REASON_KEYSTORE_UNAVAILABLE: {ErrKMS},
	pb.ErrorReason_ERROR_REASON_KEYSTORE_READ_ONLY:   {ErrKMS},
}

// reasonPrefix is dropped from an ErrorReason name to give the word the daemon sends.
const reasonPrefix = "ERROR_REASON_"

// byReason maps the daemon's stable reason words; it is consulted before the status code.
var byReason = byWireWord(kindsByReason)

// byWireWord keys the reason table by the word on the wire, the form the trailer carries.
func byWireWord(table map[pb.ErrorReason][]error) map[string][]error {
	words := make(map[string][]error, len(table))
	for reason, kinds := range table {
		words[strings.TrimPrefix(reason.String(), reasonPrefix)] = kinds
	}
	return words
}

// byCode is the fallback when the trailer carries no known reason.
var byCode = map[codes.Code][]error{
	codes.InvalidArgument:    {ErrInvalidArgument},
	codes.Unauthenticated:    {ErrUnauthenticated, ErrPermissionDenied},
	codes.PermissionDenied:   {ErrPermissionDenied},
	codes.NotFound:           {ErrKeyNotFound, ErrKMS},
	codes.FailedPrecondition: {ErrKeyState},
	codes.ResourceExhausted:  {ErrResourceExhausted},
	codes.Unavailable:        {ErrUnavailable},
	codes.DeadlineExceeded:   {ErrUnavailable, context.DeadlineExceeded},
	codes.Canceled:           {context.Canceled},
	codes.Unimplemented:      {ErrUnsupported},
}

// Error is the error every failed call returns. Match its kind with errors.Is against the
// sentinels above; read the details with errors.As.
type Error struct {
	Op        string     // client operation, for example "decrypt"
	Code      codes.Code // gRPC status code (codes.OK for errors raised by the client itself)
	Reason    string     // the daemon's stable reason word, for example "DECRYPTION_FAILED"
	RequestID string     // the daemon's id for the call; its log has the detail under it
	Message   string     // the daemon's status message
	kinds     []error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("keybroker: %s: %s", e.Op, e.Message)
	if e.Reason != "" {
		s += " [" + e.Reason + "]"
	}
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// Unwrap exposes the sentinel kinds to errors.Is.
func (e *Error) Unwrap() []error { return e.kinds }

// GRPCStatus lets status.FromError and status.Code see the original status.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// fromRPC maps a gRPC failure and its trailer; nil when err carries no gRPC status.
func fromRPC(op string, err error, trailer metadata.MD) *Error {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	e := &Error{Op: op, Code: st.Code(), Message: st.Message(), Reason: first(trailer, ReasonMetadataKey), RequestID: first(trailer, RequestIDMetadataKey)}
	if kinds, ok := byReason[e.Reason]; ok {
		e.kinds = kinds
	} else if kinds, ok := byCode[e.Code]; ok {
		e.kinds = kinds
	} else {
		e.kinds = []error{ErrInternal}
	}
	return e
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
