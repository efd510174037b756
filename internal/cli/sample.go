//go:build linux || windows

package cli

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/portres/portres/winsock"
	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, sampleCmd) }

func sampleCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sample <addressfamily> <type> <protocol> <StartingPort> <NumberOfPorts>",
		Short: "Run the sample program of the SIO_ACQUIRE_PORT_RESERVATION documentation",
		Long: `sample is the C sample of Microsoft's SIO_ACQUIRE_PORT_RESERVATION page,
ported call for call onto the winsock package, doing exactly what the
published code does: it opens a socket, acquires on it a runtime
reservation of NumberOfPorts ports from StartingPort (0: the block is
placed in the dynamic range), opens a second socket, associates the FIRST
socket with the reservation, binds it to a sockaddr_in of the given family
(INADDR_ANY, port 0) and prints the port it got, releases the reservation
and closes both sockets (the second one unused). It prints what the
compiled C program prints, byte for byte (with the Winsock error numbers),
and exits 1 where it returns 1. As in C, a sockaddr_in is too short for
AF_INET6: with family 10 (23 on Windows) the bind fails with 10014
(WSAEFAULT).

Every argument after "sample" is the program's, as in C: "-1" is a number
and -h or --help are arguments (the wrong number of them prints the
program's usage and exits 1); "portres help sample" prints this help.
Global flags (--socket) go before "sample".

On Windows it calls the system's Winsock (ws2_32.dll) instead of
portresd (on Linux it talks to portresd through the winsock package).

The numbers are the platform's: AF_INET=2, AF_INET6=10 (23 on Windows),
SOCK_STREAM=1, SOCK_DGRAM=2, IPPROTO_TCP=6, IPPROTO_UDP=17.`,
		Example: "  portres sample 2 2 17 5000 20\n  portres sample 2 1 6 0 5\n  portres --socket /tmp/portres.sock sample 2 2 17 0 20",
		Args:    cobra.ArbitraryArgs,
		// Everything after "sample" is argv of the C program, flags
		// included: "-1" is a number, "-h" an argument.
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			winsock.SetBrokerSocket(e.socket)
			if status := sample(e.stdout, cmd.CommandPath(), args); status != 0 {
				return exitError(status)
			}
			return nil
		},
	}
	// -h and --help are the program's arguments here, so the command
	// lists no help flag of its own (cobra adds one unless it exists).
	cmd.Flags().BoolP("help", "h", false, "not a flag of sample: its arguments are all the program's")
	cmd.Flags().MarkHidden("help")
	cmd.DisableFlagsInUseLine = true
	return cmd
}

// sample is wmain of the C sample; argv0 is the program name it prints.
// It does what the published code does, slips included: it associates
// and binds the first socket, sock, and closes the second, sockRes,
// unused; it binds a sockaddr_in whatever the family.
func sample(w io.Writer, argv0 string, args []string) int {
	wprintf := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	WSAGetLastError := func(err error) uint32 { return uint32(winsock.ErrorCode(err)) }

	// Validate the parameters
	if len(args) != 5 {
		wprintf("usage: %s <addressfamily> <type> <protocol> <StartingPort> <NumberOfPorts>\n", argv0)
		wprintf("Opens a socket for the specified family, type, & protocol\n")
		wprintf("and then acquires a runtime port reservation for the protocol specified\n")
		wprintf("%s example usage\n", argv0)
		wprintf("   %s 2 2 17 5000 20\n", argv0)
		wprintf("   where AF_INET=2 SOCK_DGRAM=2 IPPROTO_UDP=17 StartPort=5000 NumPorts=20") // no newline, as in C
		return 1
	}
	iFamily, iType, iProtocol := wtoi(args[0]), wtoi(args[1]), wtoi(args[2])
	startPort := wtoi(args[3])
	if startPort < 0 || startPort > 65535 {
		wprintf("Starting point must be either 0 or between 1 and 65,535\n")
		return 1
	}
	startPortns := winsock.Htons(uint16(startPort)) // network byte order
	numPorts := wtoi(args[4])
	if numPorts < 0 {
		wprintf("Number of ports must be a positive number\n")
		return 1
	}
	portRange := winsock.INET_PORT_RANGE{StartPort: startPortns, NumberOfPorts: uint16(numPorts)}

	// Initialize Winsock
	if err := winsock.WSAStartup(); err != nil {
		wprintf("WSAStartup failed with error = %d\n", WSAGetLastError(err))
		return 1
	}
	defer winsock.WSACleanup()

	sock, err := winsock.NewSocket(iFamily, iType, iProtocol)
	if err != nil {
		wprintf("socket function failed with error = %d\n", WSAGetLastError(err))
		return 1
	}
	wprintf("socket function succeeded\n")
	in, _ := portRange.MarshalBinary()
	out := make([]byte, winsock.SizeofInetPortReservationInstance)
	bytesReturned, err := sock.WSAIoctl(winsock.SIO_ACQUIRE_PORT_RESERVATION, in, out, nil, nil)
	if err != nil {
		wprintf("WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION) failed with error = %d\n", WSAGetLastError(err))
		sock.Close()
		return 1
	}
	wprintf("WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION) succeeded, bytesReturned = %d\n", bytesReturned)
	var portRes winsock.INET_PORT_RESERVATION_INSTANCE
	portRes.UnmarshalBinary(out)
	wprintf("  Starting port=%d,  Number of Ports=%d, Token=%d\n",
		winsock.Htons(portRes.Reservation.StartPort), portRes.Reservation.NumberOfPorts, int64(portRes.Token.Token))
	token, _ := portRes.Token.MarshalBinary()

	sockRes, err := winsock.NewSocket(iFamily, iType, iProtocol)
	if err != nil {
		wprintf("socket function for second socket failed with error = %d\n", WSAGetLastError(err))
		sock.Close()
		return 1
	}
	wprintf("socket function for second socket succeeded\n")

	// The published code associates and binds sock, not sockRes.
	bytesReturned, err = sock.WSAIoctl(winsock.SIO_ASSOCIATE_PORT_RESERVATION, token, nil, nil, nil)
	if err != nil {
		wprintf("WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION) failed with error = %d\n", WSAGetLastError(err))
	} else {
		wprintf("WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION) succeeded, bytesReturned = %d\n", bytesReturned)

		// sockaddr_in service: sin_family = iFamily, INADDR_ANY, port 0;
		// sizeof (service) is 16 bytes whatever the family.
		service := make([]byte, winsock.SizeofSockaddrIn)
		binary.NativeEndian.PutUint16(service, uint16(iFamily))
		if err := sock.BindSockaddr(service); err != nil {
			wprintf("bind failed with error = %d\n", WSAGetLastError(err))
		} else {
			wprintf("bind succeeded\n")
			sockName, err := sock.Getsockname()
			if err != nil {
				wprintf("getsockname failed with error = %d\n", WSAGetLastError(err))
			} else {
				wprintf("getsockname succeeded\n")
				wprintf("Port number allocated = %d\n", sockName.Port())
			}
		}
	}

	// comment out this block of code if you don't want to delete the reservation just created
	bytesReturned, err = sock.WSAIoctl(winsock.SIO_RELEASE_PORT_RESERVATION, token, nil, nil, nil)
	if err != nil {
		wprintf("WSAIoctl(SIO_RELEASE_PORT_RESERVATION) failed with error = %d\n", WSAGetLastError(err))
	} else {
		wprintf("WSAIoctl(SIO_RELEASE_PORT_RESERVATION) succeeded, bytesReturned = %d\n", bytesReturned)
	}
	if err := sockRes.Close(); err != nil {
		wprintf("closesocket for second socket failed with error = %d\n", WSAGetLastError(err))
	}
	if err := sock.Close(); err != nil {
		wprintf("closesocket for first socket failed with error = %d\n", WSAGetLastError(err))
	}
	return 0
}

// wtoi is _wtoi: leading white space, an optional sign, then decimal
// digits up to the first other character; 0 if there are none;
// INT_MAX or INT_MIN when the value does not fit an int.
func wtoi(s string) int {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg, s = s[0] == '-', s[1:]
	}
	var n int64
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = min(n*10+int64(s[i]-'0'), math.MaxInt32+1)
	}
	if neg {
		n = -n
	}
	return int(max(min(n, math.MaxInt32), math.MinInt32))
}
