package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"tandem/internal/config"
	"tandem/internal/member"
	_ "tandem/internal/member/all" // every member kind
)

// configHelp is the --config flag's help: where tandem looks without it.
const configHelp = "config file (default $TANDEM_CONFIG, else ./tandem.yaml, else ~/.config/tandem/tandem.yaml)"

// configFlag adds the --config flag.
func configFlag(f *pflag.FlagSet, p *string) { f.StringVar(p, "config", "", configHelp) }

// configPath is the configuration file a command uses: --config, else
// $TANDEM_CONFIG, else the first of ./tandem.yaml and
// $XDG_CONFIG_HOME/tandem/tandem.yaml (~/.config/tandem/tandem.yaml)
// that exists.
func configPath(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if env := os.Getenv("TANDEM_CONFIG"); env != "" {
		return env, nil
	}
	candidates := []string{"tandem.yaml"}
	if dir, err := os.UserConfigDir(); err == nil {
		candidates = append(candidates, filepath.Join(dir, "tandem", "tandem.yaml"))
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return "", usageError{fmt.Errorf("no configuration: give --config FILE, set TANDEM_CONFIG, or put it at %s", strings.Join(candidates, " or "))}
}

func loadConfig(flag string) (*config.Config, error) {
	path, err := configPath(flag)
	if err != nil {
		return nil, err
	}
	c, err := config.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// loadEnv loads the configuration and opens its environment.
func loadEnv(path string, log *slog.Logger) (*member.Env, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	if log != nil {
		log.Debug("configuration loaded", "file", cfg.Path(), "regions", len(cfg.Regions), "protection_groups", len(cfg.ProtectionGroups))
	}
	return member.NewEnv(cfg, log), nil
}
