// Package chromium runs a headless Chromium through chromedp: for the PDF
// form of tandem's reports, and for the dashboard's browser tests.
package chromium

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/chromedp/chromedp"
)

// Find is the browser's path: $TANDEM_CHROMIUM, else the first of
// chromium, chromium-browser, google-chrome on the PATH.
func Find() (string, error) {
	if p := os.Getenv("TANDEM_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("TANDEM_CHROMIUM: %w", err)
		}
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no Chromium found: install it (Debian: apt-get install chromium) or set TANDEM_CHROMIUM to its path")
}

// Start starts a headless browser that lives as long as ctx and returns
// the context of its first tab (more tabs: chromedp.NewContext of it).
func Start(ctx context.Context, opts ...chromedp.ExecAllocatorOption) (context.Context, context.CancelFunc, error) {
	path, err := Find()
	if err != nil {
		return nil, nil, err
	}
	all := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path))
	if os.Geteuid() == 0 {
		all = append(all, chromedp.NoSandbox) // Chromium's sandbox refuses root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(all, opts...)...)
	tab, cancelTab := chromedp.NewContext(actx)
	cancel := func() { cancelTab(); cancelAlloc() }
	if err := chromedp.Do(tab); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("start %s: %w", path, err)
	}
	return tab, cancel, nil
}

// PDF prints an HTML page (self-contained: it loads nothing) as an A4 PDF.
func PDF(ctx context.Context, page []byte) ([]byte, error) {
	dir, err := os.MkdirTemp("", "tandem-pdf-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "page.html")
	if err := os.WriteFile(file, page, 0o600); err != nil {
		return nil, err
	}
	ctx, stop := context.WithTimeout(ctx, 2*time.Minute)
	defer stop()
	tab, cancel, err := Start(ctx, chromedp.UserDataDir(filepath.Join(dir, "profile")))
	if err != nil {
		return nil, err
	}
	defer cancel()
	if err := chromedp.Do(tab, chromedp.Navigate("file://"+file)); err != nil {
		return nil, fmt.Errorf("load the page in Chromium: %w", err)
	}
	pdf, err := chromedp.Run(tab, chromedp.PrintToPDF(chromedp.PDFPaper(chromedp.PaperA4), chromedp.PDFPrintBackground(), chromedp.PDFMargin(0.4)))
	if err != nil {
		return nil, fmt.Errorf("print the page to PDF in Chromium: %w", err)
	}
	return pdf, nil
}
