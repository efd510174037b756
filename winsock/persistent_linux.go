package winsock

import (
	"context"
	"errors"

	"github.com/portres/portres"
)

func createPersistent(proto int, start, count uint16, token *uint64) uint32 {
	if token == nil {
		return ERROR_INVALID_PARAMETER
	}
	return persistentCall(func(c *portres.Client) error {
		r, err := c.CreatePersistent(context.Background(), portres.Proto(proto), Ntohs(start), count)
		if err == nil {
			*token = r.Token()
		}
		return err
	})
}

func deletePersistent(proto int, start, count uint16) uint32 {
	return persistentCall(func(c *portres.Client) error {
		return c.DeletePersistent(context.Background(), portres.Proto(proto), Ntohs(start), count)
	})
}

func lookupPersistent(proto int, start, count uint16, token *uint64) uint32 {
	if token == nil {
		return ERROR_INVALID_PARAMETER
	}
	return persistentCall(func(c *portres.Client) error {
		r, err := c.LookupPersistent(context.Background(), portres.Proto(proto), Ntohs(start), count)
		if err == nil {
			*token = r.Token()
		}
		return err
	})
}

// persistentCall runs f on the shared broker connection and turns its
// error into the Win32 code the Windows function would return.
func persistentCall(f func(*portres.Client) error) uint32 {
	c, err := sharedClient(context.Background())
	if err == nil {
		err = f(c)
		forgetShared(c, err)
	}
	if err == nil {
		return NO_ERROR
	}
	var pe *portres.Error
	if errors.As(err, &pe) {
		return uint32(pe.Code)
	}
	return uint32(ErrorCode(err))
}
